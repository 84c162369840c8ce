"""The one runner (`studio.runner`): Stop, the time limit, the whole `Progress` to the callback, the ETA line, lease
timing, and the model pool on `Task.load`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from studio import lease, runner
from studio.progress import Progress, Result
from studio.runner import Clock, ModelPool, Run, StopFlag, drain, format_duration


def _task(total: int, sent: list | None = None, result: type = Result):
    step = 0
    for step in range(1, total + 1):
        cmd = yield Progress(step, total, None, {"loss": 1.0 / step}, "draw")
        if sent is not None:
            sent.append(cmd)
        if cmd == "stop":
            break
    yield result(steps_run=step, stopped=step < total, timings={"per_step_s": 0.5})


def test_the_callback_receives_the_whole_progress_and_false_stops_with_the_result_so_far():
    seen = []
    out = runner.run(_task(10), lambda p: seen.append(p) or p.step < 3)
    assert [p.step for p in seen] == [1, 2, 3] and all(isinstance(p, Progress) for p in seen)
    assert seen[0].metrics == {"loss": 1.0} and seen[0].stage == "draw" and seen[0].clock is not None
    assert out.steps_run == 3 and out.stopped
    # the library's form keeps its (step, total, preview) callback
    calls = []
    assert drain(_task(4), lambda s, t, p: calls.append((s, t, p))).steps_run == 4 and calls[-1] == (4, 4, None)


def test_a_set_flag_sends_stop_once_between_steps_and_closing_closes_the_task():
    sent, flag = [], StopFlag()
    r = Run(_task(10, sent), flag)
    for item in r:
        if item.step == 2:
            flag.set()
    assert sent == [None, "stop"] and r.result.steps_run == 2 and r.result.stopped
    closed = []

    def task():
        try:
            yield Progress(1, 5)
            yield Progress(2, 5)
        finally:
            closed.append(True)

    steps = iter(Run(task()))
    next(steps)
    steps.close()  # the page went away
    assert closed == [True]


def test_the_time_limit_stops_the_run_and_says_so_in_the_notice():
    flag = StopFlag(limit_s=0.05)
    sent = []

    def slow():
        for step in range(1, 100):
            time.sleep(0.02)
            if (yield Progress(step, 99)) == "stop":
                sent.append(step)
                break
        yield Result(steps_run=step, stopped=True, notice="demo CLIP")

    out = runner.run(slow(), stop=flag)
    assert len(sent) == 1 and out.steps_run < 99
    assert out.notice == "demo CLIP This server stops every run after 0.05 s; the result so far is shown."


def test_a_finished_run_times_its_task_for_the_lease_and_a_stopped_one_does_not(monkeypatch):
    monkeypatch.setattr(lease, "_PER_STEP", {})

    @dataclass
    class Timed(Result):
        task = "clipdraw"

    runner.run(_task(3, result=Timed), lambda p: p.step < 2)
    assert lease.per_step("clipdraw") is None
    runner.run(_task(3, result=Timed))
    assert lease.per_step("clipdraw") == 0.5


def test_the_clock_line_elapsed_speed_eta():
    now = [100.0]
    clock = Clock(lambda: now[0])
    now[0] = 103.0
    assert clock.tick(1, 50).line() == "elapsed 3 s"  # loading time is elapsed, not slowness: no speed yet
    now[0] = 105.0
    assert clock.tick(5, 50).line() == "elapsed 5 s · 2.0 steps/s · ETA 23 s"
    now[0] = 125.0
    assert clock.tick(6, 50).line() == "elapsed 25 s · 4.4 s/step · ETA 3:14"
    now[0] = 126.0
    assert clock.tick(1, 10, "edit").line() == "elapsed 26 s"  # a new stage counts its own speed
    assert [format_duration(s) for s in (0, 59.4, 61, 3725, -1)] == ["0 s", "59 s", "1:01", "1:02:05", "?"]


def test_every_progress_bar_of_the_page_shows_the_runners_line():
    from studio.ui.common import progress_html

    now = [0.0]
    clock = Clock(lambda: now[0])
    clock.tick(1, 4)
    now[0] = 2.0
    clock.tick(3, 4)
    bar = progress_html(3, 4, "loss 0.5", clock=clock)
    assert "step 3 / 4 (75 %) · loss 0.5 · elapsed 2 s · 1.0 steps/s · ETA 1 s</div>" in bar


# ---------------------------------------------------------------------------------------------------- the pool
@dataclass
class _Scorer:
    spec: str
    is_demo: bool = False


class _Pipe:
    def __init__(self, **models):
        self.models = models
        self.scorer = _Scorer(models.get("clip", "x"))


@dataclass(frozen=True)
class _FakeTask:
    name: str
    built: list

    def load(self, **models):
        self.built.append(models)
        return _Pipe(**models)


def test_the_pool_keeps_n_resident_and_loads_once_under_one_lock():
    built: list = []
    task = _FakeTask("t", built)
    pool = ModelPool(keep=2)
    a = pool.get(task, clip="a")
    assert pool.get(task, clip="a") is a and len(built) == 1
    b = pool.get(task, clip="b")
    pool.get(task, clip="a")  # a was used last: b is the oldest now
    pool.get(task, clip="c")
    assert len(pool) == 2 and pool.get(task, clip="a") is a and len(built) == 3
    assert pool.get(task, clip="b") is not b and len(built) == 4  # b was dropped, so built again
    # two threads asking for a new pipeline at once build it once
    barrier, got = threading.Barrier(2), []

    def ask():
        barrier.wait()
        got.append(pool.get(task, clip="d"))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert got[0] is got[1] and len(built) == 5
    # keep-N counts each loader on its own: another task's pipeline does not push these out
    other = _FakeTask("u", built)
    pool.get(other, clip="a")
    assert len(pool) == 3 and pool.get(task, clip="d") is got[0] and len(built) == 6


def test_the_pool_builds_again_when_real_weights_replace_the_demo_stand_in(monkeypatch):
    import torch

    from studio import scorer as sc

    # the demo model standing in for ViT-B-32/openai (spec: what was asked for; is_demo: what loaded)
    stand_in = SimpleNamespace(spec="ViT-B-32/openai", is_demo=True, device="cpu", dtype=torch.float32)
    resident = {"scorer": stand_in}
    asked = []
    monkeypatch.setattr(sc, "get_scorer", lambda spec, device=None, precision=None: asked.append(
        (spec, device, precision)) or resident["scorer"])
    built: list = []

    class Task:
        def load(self, **models):
            built.append(models)
            pipe = _Pipe(**models)
            pipe.scorer = sc.get_scorer(models["clip"])
            return pipe

    task, pool = Task(), ModelPool()
    first = pool.get(task, clip="ViT-B-32/openai")
    assert pool.get(task, clip="ViT-B-32/openai") is first and len(built) == 1  # the stand-in is still resident
    assert asked[-1] == ("ViT-B-32/openai", "cpu", "fp32")  # the stand-in's own key
    real = SimpleNamespace(spec="ViT-B-32/openai", is_demo=False, device="cpu", dtype=torch.float32)
    resident["scorer"] = real  # the real weights arrived
    second = pool.get(task, clip="ViT-B-32/openai")
    assert second is not first and second.scorer is real and len(built) == 2
    assert pool.get(task, clip="ViT-B-32/openai") is second  # a real model stays


def test_only_the_runner_sends_stop_into_a_generator():
    root = Path(__file__).resolve().parents[1]
    senders = [str(p.relative_to(root)) for folder in ("studio", "pipelines") for p in (root / folder).rglob("*.py")
               if p.name != "runner.py" and ('.send("stop")' in p.read_text() or ".send('stop')" in p.read_text())]
    assert senders == []


def test_a_generator_that_fails_is_closed_and_the_error_reaches_the_caller():
    def broken():
        yield Progress(1, 3)
        raise ValueError("`prompt` must be non-empty text, got ''")

    with pytest.raises(ValueError, match="`prompt`"):
        runner.run(broken())
