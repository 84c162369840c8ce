"""Vector Sketch tab without a model: streaming, the Stop flag, option mapping, and the tab's construction.

Fake run generators stand in for the pipelines (same protocol: progress items, then a result; "stop" ends it);
one test drives the real CLIPDraw pipeline on the tiny CLIP through the same `stream` the page uses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import gradio as gr
import pytest
from PIL import Image

from studio.ui import vector_sketch as ui


@dataclass
class FakeProgress:
    step: int
    total: int
    preview: Image.Image
    loss: float | None = None
    done: bool = False


@dataclass
class FakeResult:
    steps_run: int
    stopped: bool
    image: Image.Image = field(default_factory=lambda: Image.new("RGB", (8, 8), "red"))
    scores: dict = field(default_factory=lambda: {"clip_score": 31.5, "loss": -0.3})
    notice: str | None = "demo model"
    done: bool = True

    def save(self, video="mp4"):
        return {"svg": "/tmp/a.svg", "png": "/tmp/a.png", "video": f"/tmp/a.{video}"}


def fake_run(total: int, sent: list):
    step = 0
    for step in range(1, total + 1):
        cmd = yield FakeProgress(step, total, Image.new("RGB", (8, 8)), 0.1 * step)
        sent.append(cmd)
        if cmd == "stop":
            return (yield FakeResult(step, True))
    yield FakeResult(step, False)


def test_stream_yields_previews_then_files():
    sent = []
    outs = list(ui.stream(fake_run(3, sent), threading.Event()))
    assert len(outs) == 4
    assert all(o[2] is None for o in outs[:3]) and "step 2 / 3" in outs[1][1]
    image, progress, svg, png, video, text = outs[-1]
    assert (svg, png, video) == ("/tmp/a.svg", "/tmp/a.png", "/tmp/a.mp4")
    assert "31.5" in text and "demo model" in text
    assert sent == [None, None, None]


def test_stop_flag_sends_stop_and_keeps_the_result():
    sent, flag = [], threading.Event()
    gen = ui.stream(fake_run(10, sent), flag)
    next(gen)
    flag.set()
    rest = list(gen)
    assert sent == ["stop"]
    assert rest[-1][2] == "/tmp/a.svg" and "stopped at step 1" in rest[-1][5]


def test_options_map_the_page_values(tmp_path):
    svg = tmp_path / "start.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    opts = ui.clipdraw_options("a cat", "ugly\n\nmessy", 64.0, 100.0, 224.0, 20.0, "custom", "#ff0000, #00f",
                               True, str(svg), 3.0)
    assert opts["negative_prompts"] == ["ugly", "messy"] and opts["num_paths"] == 64 and opts["seed"] == 3
    assert opts["colors"] == "#ff0000, #00f" and opts["init_svg"].startswith("<svg") and opts["filled"] is True
    with pytest.raises(ValueError, match="`colors`"):
        ui.clipdraw_options("a cat", "", 8, 8, 64, 5, "custom", " ", False, None, 0)
    with pytest.raises(ValueError, match="`image`"):
        ui.clipasso_options(None, 16, 10, 1, 1.5, False, 0)


def test_tab_builds_with_plain_functions():
    with gr.Blocks() as demo:
        ui.build(lambda spec, o: fake_run(2, []), lambda spec, loss, o: fake_run(2, []), ["tiny"], "tiny",
                 lambda spec: None, loss_model_choices=["RN101/openai"])
    names = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert {"sketch_clipdraw", "sketch_clipasso", "sketch_clipdraw_stop", "sketch_clipasso_stop"} <= names


def test_stream_drives_the_real_pipeline(tiny_scorer, tmp_path):
    from pipelines.clipdraw import CLIPDrawPipeline

    run = CLIPDrawPipeline(tiny_scorer).iterate("a red circle", num_paths=4, num_iterations=2, canvas_size=32,
                                                num_augs=1, preview_every=1)
    outs = list(ui.stream(run, threading.Event(), video="gif"))
    assert len(outs) == 3
    assert outs[-1][4].endswith(".gif") and outs[-1][0].size == (32, 32)
