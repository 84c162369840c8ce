"""The run protocol's core: settings checks, the registry's specs, drain, the thread bridge, Result.save."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from studio.media import read_png_metadata
from studio.progress import Progress, Result, Stopped, iterate_callback, json_safe
from studio.runner import drain
from studio.tasks import SEED_MAX, check_seed, check_texts, param, resolve, specs


@dataclass
class Cfg:
    num_steps: int = param(10, 1, 100, help="steps")
    lr: float = param(0.1, 0.0, 1.0, help="rate")
    mode: str = param("a", choices=("a", "b"), help="mode")
    flag: bool = param(False, help="flag")
    seed: int = param(0, 0, SEED_MAX, help="seed")
    size: tuple = param((1, 2), help="pair", control=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, r"`num_steps` must be an integer in \[1, 100\], got 0"),
    ({"num_steps": 2.5}, r"`num_steps` must be an integer in \[1, 100\], got 2.5"),
    ({"num_steps": "3"}, r"`num_steps` must be an integer"),
    ({"num_steps": True}, r"`num_steps` must be an integer"),
    ({"lr": math.nan}, r"`lr` must be a number in \[0, 1\], got nan"),
    ({"lr": math.inf}, r"`lr` must be a number"),
    ({"lr": "0.1"}, r"`lr` must be a number"),
    ({"mode": "c"}, r"`mode` must be one of \['a', 'b'\], got 'c'"),
    ({"flag": 1}, r"`flag` must be True or False, got 1"),
    ({"seed": -1}, r"`seed` must be an integer in \[0, 4294967295\], got -1"),
    ({"seed": 2**70}, r"`seed` must be an integer in \[0, 4294967295\]"),
    ({"size": 3}, r"`size` must be a list"),
    ({"nope": 1}, r"unknown setting 'nope' for Cfg; valid: num_steps, lr, mode, flag, seed, size"),
])
def test_bad_settings_name_the_argument_the_range_and_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve(Cfg(), kwargs)


def test_resolve_accepts_what_a_page_sends_and_keeps_the_rest():
    cfg = resolve(Cfg(lr=0.5), {"num_steps": 7.0, "seed": np.int64(3), "size": [3, 4]})
    assert (cfg.num_steps, cfg.lr, cfg.seed, cfg.size) == (7, 0.5, 3, (3, 4))
    assert type(cfg.num_steps) is int and type(cfg.seed) is int
    assert check_seed(SEED_MAX) == SEED_MAX


def test_specs_are_plain_data_with_page_ranges():
    s = specs(Cfg)
    assert list(s) == ["num_steps", "lr", "mode", "flag", "seed", "size"]
    assert (s["num_steps"].kind, s["num_steps"].lo, s["num_steps"].hi) == ("int", 1, 100)
    assert s["mode"].choices == ("a", "b") and s["flag"].kind == "bool" and not s["size"].control
    assert specs(Cfg(num_steps=5))["num_steps"].default == 5  # an instance's values are its defaults


def test_texts_are_checked_not_cut():
    assert check_texts("a\n\nb|c", "negative_prompts", 8) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="`negative_prompts` must be texts"):
        check_texts(["a", 5], "negative_prompts", 8)
    with pytest.raises(ValueError, match="at most 1000 characters"):
        check_texts(["x" * 1001], "negative_prompts", 8)


def _task(total, stop_at=None):
    step = 0
    for step in range(1, total + 1):
        if (yield Progress(step, total, None, {"loss": 1.0 / step})) == "stop":
            break
    yield Result(steps_run=step, stopped=step < total)


def test_drain_calls_back_every_step_and_false_stops():
    seen = []
    out = drain(_task(5), lambda step, total, preview: seen.append(step) or step < 2)
    assert seen == [1, 2] and out.stopped and out.steps_run == 2
    assert drain(_task(3)).steps_run == 3


def test_thread_bridge_reports_stops_within_a_step_and_raises_worker_errors():
    calls = []

    def work(report):
        for i in range(1, 101):
            calls.append(i)
            report(i, 100)
        return "finished"

    gen = iterate_callback(work, lambda step, total: Progress(step, total))
    assert next(gen).step == 1
    assert gen.send(None).step == 2
    with pytest.raises(StopIteration) as done:
        gen.send("stop")
    assert done.value.value == (None, True)
    assert len(calls) <= 4  # at most one report ahead, then the stop raised in the next report
    assert not any(t.name == "studio-task" for t in threading.enumerate())

    def failing(report):
        report(1, 2)
        raise RuntimeError("The GPU ran out of memory during generation.")

    gen = iterate_callback(failing, lambda step, total: Progress(step, total))
    next(gen)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        gen.send(None)

    def whole(report):
        report(1, 1)
        return 42

    assert drain(_wrap(iterate_callback(whole, lambda s, t: Progress(s, t)))).value == 42
    assert issubclass(Stopped, Exception)


def _wrap(bridge):
    value, stopped = yield from bridge

    @dataclass
    class Out(Result):
        value: int = 0

    yield Out(value=value, stopped=stopped)


def test_closing_the_bridge_ends_the_worker():
    started = threading.Event()

    def work(report):
        started.set()
        while True:
            report(1, 1)
            time.sleep(0.001)

    gen = iterate_callback(work, lambda s, t: Progress(s, t))
    next(gen)
    gen.close()
    assert started.is_set() and not any(t.name == "studio-task" for t in threading.enumerate())


def test_result_save_writes_png_with_settings_svg_and_video(tmp_path):
    @dataclass
    class Drawing(Result):
        task = "drawing"
        svg: str = ""

    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 128, 255)]
    out = Drawing(image=Image.new("RGB", (8, 8), "red"), frames=frames, scores={"clip_score": 31.25, "x": math.nan},
                  seed=3, settings={"prompt": "a red circle", "crop": (0.7, 0.9)},
                  svg='<svg xmlns="http://www.w3.org/2000/svg"/>')
    paths = out.save(tmp_path, video="gif")
    assert set(paths) == {"png", "svg", "video"} and paths["video"].suffix == ".gif"
    meta = read_png_metadata(paths["png"])
    assert meta == {"task": "drawing", "prompt": "a red circle", "crop": [0.7, 0.9], "seed": 3,
                    "scores": {"clip_score": 31.25}}
    assert paths["svg"].read_text().startswith("<svg")
    several = Result(images=[Image.new("RGB", (8, 8))] * 2).save(tmp_path / "b")
    assert set(several) == {"png0", "png1"}
    with pytest.raises(ValueError, match="`video`"):
        out.save(tmp_path, video="avi")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        json_safe({"t": object()})
