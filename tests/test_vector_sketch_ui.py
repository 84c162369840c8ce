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
from conftest import launch_local
from PIL import Image

from studio.progress import Progress, Result
from studio.ui import vector_sketch as ui


@dataclass
class FakeResult(Result):
    """A sketch result with fixed files (the protocol's fields, as the pipelines fill them)."""

    task = "fake"
    save_calls: list = field(default_factory=list)

    def save(self, folder=None, video="mp4", fps=12.0):
        return {"svg": "/tmp/a.svg", "png": "/tmp/a.png", "video": f"/tmp/a.{video}"}


def fake_run(total: int, sent: list):
    step = 0
    for step in range(1, total + 1):
        cmd = yield Progress(step, total, Image.new("RGB", (8, 8)), {"loss": 0.1 * step})
        sent.append(cmd)
        if cmd == "stop":
            break
    yield FakeResult(image=Image.new("RGB", (8, 8), "red"), scores={"clip_score": 31.5, "loss": -0.3},
                     notice="demo model", steps_run=step, stopped=step < total, settings={"num_steps": total})


def test_stream_yields_previews_then_files():
    sent = []
    outs = list(ui.stream(fake_run(3, sent), threading.Event()))
    assert len(outs) == 4
    assert all(o[2] is None for o in outs[:3]) and "step 2 / 3" in outs[1][1]
    image, progress, svg, png, video, text = outs[-1]
    assert (svg, png, video) == ("/tmp/a.svg", "/tmp/a.png", "/tmp/a.mp4")
    assert "31.5" in text and "demo model" in text and "done: 3 of 3 steps" in progress
    assert sent == [None, None, None]


def test_stop_flag_sends_stop_and_keeps_the_result():
    sent, flag = [], threading.Event()
    gen = ui.stream(fake_run(10, sent), flag)
    next(gen)
    flag.set()
    rest = list(gen)
    assert sent == ["stop"]
    image, progress, svg, png, video, text = rest[-1]
    assert svg == "/tmp/a.svg" and image is not None
    assert "stopped at step 1 of 10" in progress and "100 %" not in progress and "done" not in progress


def test_svg_upload_is_read_and_bad_files_are_named(tmp_path):
    svg = tmp_path / "start.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    assert ui.read_svg_upload(str(svg)).startswith("<svg") and ui.read_svg_upload(None) is None
    bad = tmp_path / "bad.svg"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="`init_svg`"):
        ui.read_svg_upload(str(bad))


def test_a_typed_palette_is_used_with_custom_and_refused_beside_a_named_mode():
    assert ui.palette_choice("custom", " #ff0000, #0000ff ") == "#ff0000, #0000ff"
    assert ui.palette_choice("primary", "") == "primary" and ui.palette_choice("primary", None) == "primary"
    with pytest.raises(ValueError, match="palette is empty"):
        ui.palette_choice("custom", "  ")
    # issue 29: a palette typed beside a named mode was dropped in silence; now the reason is given
    with pytest.raises(ValueError, match=r"custom palette \('#ff0000'\) is typed but `colors` is 'primary'"):
        ui.palette_choice("primary", "#ff0000")


def _specs():
    from pipelines.clipdraw import COLOR_MODES
    from pipelines.registry import get_task

    return {"draw_specs": get_task("clipdraw").specs(), "sketch_specs": get_task("clipasso").specs(),
            "colour_modes": list(COLOR_MODES)}


def test_tab_builds_with_plain_functions():
    with gr.Blocks() as demo:
        ui.build(lambda *a: fake_run(2, []), lambda *a: fake_run(2, []), ["tiny"], "tiny",
                 lambda spec: None, loss_model_choices=["RN101/openai"], **_specs())
    names = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert {"sketch_clipdraw", "sketch_clipasso", "sketch_clipdraw_stop", "sketch_clipasso_stop"} <= names


@pytest.mark.parametrize("cpu", [False, True])
def test_controls_start_at_the_papers_settings_on_a_gpu_and_smaller_on_a_cpu(cpu):
    from pipelines.clipasso import CLIPassoConfig
    from pipelines.clipdraw import CLIPDrawConfig

    with gr.Blocks() as demo:
        ui.build(lambda *a: fake_run(2, []), lambda *a: fake_run(2, []), ["tiny"], "tiny",
                 lambda spec: None, cpu=cpu, **_specs())
    start = {c.elem_id: c.value for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    assert (CLIPDrawConfig().num_strokes, CLIPDrawConfig().num_steps) == (256, 1000)  # CLIPDraw's paper
    assert (CLIPassoConfig().num_steps, CLIPassoConfig().num_seeds) == (2000, 3)  # CLIPasso's paper
    want = (64, 300, 300, 2) if cpu else (256, 1000, 2000, 3)
    assert (start["clipdraw--num_strokes"], start["clipdraw--num_steps"], start["clipasso--num_steps"],
            start["clipasso--num_seeds"]) == want


def test_stream_drives_the_real_pipeline(vit, tmp_path):
    from pipelines.clipdraw import CLIPDrawPipeline

    run = CLIPDrawPipeline(vit).iterate("a red circle", num_strokes=4, num_steps=2, canvas_size=32,
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

    def clipdraw(spec, prompt, init_svg, settings):
        return CLIPDrawPipeline(scorers[spec]).iterate(prompt, init_svg=init_svg, **settings)

    def clipasso(spec, loss_spec, image, settings):
        loss = scorers[loss_spec] if loss_spec else None
        return CLIPassoPipeline(scorers[spec], loss).iterate(image, **settings)

    with gr.Blocks() as demo:
        ui.build(clipdraw, clipasso, ["tiny"], "tiny", lambda spec: None, loss_model_choices=["tiny-rn"],
                 **_specs())
    url = launch_local(demo)
    yield url
    demo.close()


@pytest.mark.e2e
def test_tab_over_http_streams_stops_and_reports_errors(sketch_url, tmp_path):
    import time

    from gradio_client import Client, handle_file

    client = Client(sketch_url, verbose=False)
    # model, prompt, negatives, colours, custom, svg, then DRAW_SETTINGS: strokes, steps, canvas, width, filled, seed
    job = client.submit("tiny", "a red circle", "", "primary", "", None, 6, 2000, 64, 10, False, 0,
                        api_name="/sketch_clipdraw")
    deadline = time.time() + 120
    while len(job.outputs()) < 2 and time.time() < deadline:  # wait for live previews
        time.sleep(0.2)
    client.predict(api_name="/sketch_clipdraw_stop")
    image, progress, svg, png, video, text = job.result(timeout=120)
    assert "stopped at step" in progress and svg.endswith(".svg") and video.endswith(".mp4")
    assert pathlib.Path(svg).read_text(encoding="utf-8").startswith("<svg")

    photo = tmp_path / "photo.png"
    Image.new("RGB", (48, 48), "white").save(photo)
    # model, loss model, photo, then SKETCH_SETTINGS: strokes, steps, seeds, stroke width, mask, seed
    out = client.predict("tiny", "tiny-rn", handle_file(str(photo)), 4, 3, 2, 1.5, False, 0,
                         api_name="/sketch_clipasso")
    assert "kept seed" in out[5] and out[2].endswith(".svg")

    with pytest.raises(Exception, match="prompt"):
        client.predict("tiny", "  ", "", "full", "", None, 6, 5, 64, 10, False, 0, api_name="/sketch_clipdraw")
    with pytest.raises(Exception, match="choose 'custom'"):  # refused before any work, not ignored
        client.predict("tiny", "a red circle", "", "primary", "#ff0000", None, 6, 5, 64, 10, False, 0,
                       api_name="/sketch_clipdraw")


def test_vectorize_subtab_builds_and_streams_paths_and_psnr(tmp_path):
    """The "Picture → SVG" sub-tab: its endpoints exist, its controls start at the task's values, and the real
    pipeline's progress and result read as paths and PSNR."""
    from pipelines.registry import get_task
    from pipelines.vectorize import VectorizePipeline

    specs = get_task("vectorize").specs()
    with gr.Blocks() as demo:
        ui.build(lambda *a: fake_run(2, []), lambda *a: fake_run(2, []), ["tiny"], "tiny", lambda spec: None,
                 vectorize=lambda *a: fake_run(2, []), vectorize_specs=specs, cpu=True, **_specs())
    names = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert {"sketch_vectorize", "sketch_vectorize_stop"} <= names
    start = {c.elem_id: c.value for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    assert start["vectorize--num_paths"] == specs["num_paths"].cpu_default
    assert start["vectorize--mode"] == "fill" and start["vectorize--paint"] == "solid"

    picture = Image.new("RGB", (32, 32), "white")
    picture.paste((200, 30, 30), (8, 8, 24, 24))
    run = VectorizePipeline().iterate(picture, num_paths=2, num_steps=3, preview_every=1)
    outs = list(ui.stream(run, threading.Event()))
    assert "paths · PSNR" in outs[0][1]
    image, progress, svg, png, video, text = outs[-1]
    assert "paths · PSNR" in text and "done" in progress
    assert pathlib.Path(svg).read_text(encoding="utf-8").startswith("<svg") and png.endswith(".png")


@pytest.mark.e2e
def test_vectorize_over_http_streams_stops_and_names_bad_input(tmp_path):
    """A client uploads a picture to "Picture → SVG", sees previews, presses Stop, gets the SVG; a file that is not
    a picture is refused with the task's message."""
    import time

    from gradio_client import Client, handle_file

    from pipelines.registry import get_task
    from pipelines.vectorize import VectorizePipeline

    with gr.Blocks() as demo:
        ui.build(lambda *a: fake_run(2, []), lambda *a: fake_run(2, []), ["tiny"], "tiny", lambda spec: None,
                 vectorize=lambda spec, image, settings: VectorizePipeline().iterate(image, **settings),
                 vectorize_specs=get_task("vectorize").specs(), **_specs())
    url = launch_local(demo)
    try:
        picture = tmp_path / "picture.png"
        img = Image.new("RGB", (48, 48), "white")
        img.paste((30, 60, 200), (10, 10, 38, 30))
        img.save(picture)
        client = Client(url, verbose=False)
        # picture, then VECTORIZE_SETTINGS: paths, mode, paint, steps, target PSNR, canvas, CLIP weight, prompt, seed
        job = client.submit("tiny", handle_file(str(picture)), 8, "fill", "solid", 500, 0.0, 64, 0.0, "", 0,
                            api_name="/sketch_vectorize")
        deadline = time.time() + 120
        while len(job.outputs()) < 2 and time.time() < deadline:
            time.sleep(0.2)
        client.predict(api_name="/sketch_vectorize_stop")
        image, progress, svg, png, video, text = job.result(timeout=120)
        assert "stopped at step" in progress and "paths · PSNR" in text
        assert pathlib.Path(svg).read_text(encoding="utf-8").startswith("<svg")
        junk = tmp_path / "junk.png"
        junk.write_bytes(b"not a picture")
        with pytest.raises(Exception, match="`image`"):
            client.predict("tiny", handle_file(str(junk)), 8, "fill", "solid", 5, 0.0, 64, 0.0, "", 0,
                           api_name="/sketch_vectorize")
    finally:
        demo.close()
