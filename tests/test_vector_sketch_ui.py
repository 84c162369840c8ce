"""Vector Sketch tab without a model: streaming, the Stop flag, option mapping, and the tab's construction.

Fake run generators stand in for the pipelines (same protocol: progress items, then a result; "stop" ends it);
one test drives the real CLIPDraw pipeline on the tiny CLIP through the same `stream` the page uses.
"""

from __future__ import annotations

import pathlib
import threading
from dataclasses import dataclass, field

import gradio as gr
import pytest
import torch
from PIL import Image

from studio.ui import vector_sketch as ui

from conftest import launch_local




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


@pytest.mark.parametrize("cpu", [False, True])
def test_sliders_start_at_the_papers_settings_on_a_gpu_and_smaller_on_a_cpu(cpu):
    with gr.Blocks() as demo:
        ui.build(lambda spec, o: fake_run(2, []), lambda spec, loss, o: fake_run(2, []), ["tiny"], "tiny",
                 lambda spec: None, cpu=cpu)
    start = {c.label: c.value for c in demo.blocks.values() if isinstance(c, gr.Slider)}
    want = ui.CPU_DEFAULTS if cpu else ui.PAPER_DEFAULTS
    assert start["Strokes"] == want["num_paths"] and start["Steps"] == want["draw_steps"]
    assert start["Seeds optimised together"] == want["seeds"]
    assert start["Steps (stops early when stalled)"] == want["sketch_steps"]
    assert (ui.PAPER_DEFAULTS["num_paths"], ui.PAPER_DEFAULTS["draw_steps"]) == (256, 1000)  # CLIPDraw's paper


def test_stream_drives_the_real_pipeline(vit, tmp_path):
    from pipelines.clipdraw import CLIPDrawPipeline

    run = CLIPDrawPipeline(vit).iterate("a red circle", num_paths=4, num_iterations=2, canvas_size=32,
                                                num_augs=1, preview_every=1)
    outs = list(ui.stream(run, threading.Event(), video="gif"))
    assert len(outs) == 3
    assert outs[-1][4].endswith(".gif") and outs[-1][0].size == (32, 32)


@pytest.fixture(scope="module")
def sketch_url(vit, rn):
    """Only this tab, wired the way app.py wires it (pipelines' `iterate` behind plain generator functions)."""
    from pipelines.clipasso import CLIPassoPipeline
    from pipelines.clipdraw import CLIPDrawPipeline

    scorers = {"tiny": vit, "tiny-rn": rn}

    def clipdraw(spec, options):
        return (yield from CLIPDrawPipeline(scorers[spec]).iterate(**options))

    def clipasso(spec, loss_spec, options):
        loss = scorers[loss_spec] if loss_spec else None
        return (yield from CLIPassoPipeline(scorers[spec], loss).iterate(**options))

    with gr.Blocks() as demo:
        ui.build(clipdraw, clipasso, ["tiny"], "tiny", lambda spec: None, loss_model_choices=["tiny-rn"])
    url = launch_local(demo)
    yield url
    demo.close()


@pytest.mark.e2e
def test_tab_over_http_streams_stops_and_reports_errors(sketch_url, tmp_path):
    import time

    from gradio_client import Client, handle_file

    client = Client(sketch_url, verbose=False)
    job = client.submit("tiny", "a red circle", "", 6, 2000, 64, 10, "primary", "", False, None, 0,
                        api_name="/sketch_clipdraw")
    deadline = time.time() + 120
    while len(job.outputs()) < 2 and time.time() < deadline:  # wait for live previews
        time.sleep(0.2)
    client.predict(api_name="/sketch_clipdraw_stop")
    image, progress, svg, png, video, text = job.result(timeout=120)
    assert "stopped at step" in text and svg.endswith(".svg") and video.endswith(".mp4")
    assert pathlib.Path(svg).read_text(encoding="utf-8").startswith("<svg")

    photo = tmp_path / "photo.png"
    Image.new("RGB", (48, 48), "white").save(photo)
    out = client.predict("tiny", "tiny-rn", handle_file(str(photo)), 4, 3, 2, 1.5, False, 0,
                         api_name="/sketch_clipasso")
    assert "kept seed" in out[5] and out[2].endswith(".svg")

    with pytest.raises(Exception, match="prompt"):
        client.predict("tiny", "  ", "", 6, 5, 64, 10, "full", "", False, None, 0, api_name="/sketch_clipdraw")
