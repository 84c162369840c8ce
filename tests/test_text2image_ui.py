"""The Text to Image tab: handlers driven with the tiny pipeline, PNG restore, errors as gr.Error, no torch import."""

from __future__ import annotations

import subprocess
import sys
import threading

import gradio as gr
import pytest

from pipelines.text2image import ModelPreset, Text2ImagePipeline
from studio.media import read_png_metadata
from studio.ui.text2image import Handlers, build, controls_from_metadata
from t2i_tiny import make_tiny_sd

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def t2i(tmp_path_factory, tiny_scorer):
    pipe = make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))
    return Text2ImagePipeline(pipe, tiny_scorer, model_name="tiny-sd",
                              preset=ModelPreset(steps=1, guidance_scale=0.0, size=32, one_step=True))


@pytest.fixture(scope="module")
def handlers(t2i):
    return Handlers(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, t2i.defaults())


def run_generate(handlers, history=(), **overrides):
    args = dict(prompt=PROMPT, negative_prompt="", steps=1, guidance_scale=0.0, width=32, height=32, num_images=3,
                batch_size=2, seed=40, random_seed=False, scheduler="default", rerank=True, history=list(history))
    args.update(overrides)
    return list(handlers.generate(*args.values()))


def test_ui_module_does_not_import_torch():
    code = "import sys, studio.ui.text2image; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=".")


def test_build_lays_out_the_tab(t2i):
    demo = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, defaults=t2i.defaults())
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(b, "value", None) for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Generate", "Stop", "Refine selected", "Edit selected"} <= labels
    with gr.Blocks() as outer:  # inside the app's Blocks it adds its tab there instead
        with gr.Tabs():
            assert build(t2i.iter_generate, defaults=t2i.defaults()) is None
    assert any(isinstance(b, gr.Tab) and b.label == "Text to Image" for b in outer.blocks.values())


def test_generate_streams_then_shows_sorted_results_and_history(handlers):
    steps = run_generate(handlers)
    assert len(steps) == 3  # two batches of progress, then the result
    assert "2/3" in steps[0][2] and "3/3" in steps[1][2]  # progress after each batch of 2
    gallery, files, info, seed, records, history_gallery, history = steps[-1]
    assert seed == 40 and len(gallery) == len(files) == len(records) == 3
    scores = [r["meta"]["clip_score"] for r in records]
    assert scores == sorted(scores, reverse=True) and "sorted by CLIP score" in info
    for path, record in zip(files, records):
        assert read_png_metadata(path) == record["meta"]
    again = run_generate(handlers, history=history, seed=1, num_images=1)[-1]
    assert len(again[6]) == 4 and again[6][0]["meta"]["seed"] == 1  # newest first


def test_multistep_generate_shows_the_step_within_the_batch(handlers):
    out = run_generate(handlers, steps=3, num_images=3, batch_size=2, rerank=False)
    assert [o[2] for o in out[:-1]] == ([f"Generating… step {s}/3 of images 1–2/3" for s in (1, 2, 3)]
                                        + [f"Generating… step {s}/3 of image 3/3" for s in (1, 2, 3)])
    assert len(out[-1][4]) == 3 and "stopped" not in out[-1][2]


def test_closing_the_handler_stops_the_diffusers_call_within_the_batch(handlers, t2i):
    """What Gradio's Stop does: it closes the handler's generator at its next yield."""
    calls = []
    handle = t2i.pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        gen = handlers.generate(PROMPT, "", 8, 0.0, 32, 32, 1, 1, 3, False, "default", False, [])
        assert "step 1/8 of image 1/1" in next(gen)[2]
        gen.close()
    finally:
        handle.remove()
    assert 1 <= len(calls) <= 3  # at most two steps after the one shown, not all eight
    assert not any(t.name == "text2image-denoise" for t in threading.enumerate())


def test_stopped_before_any_image_says_so(t2i):
    def stop_at_once(prompt, **kwargs):  # a caller that stops the pipeline at its first step
        yield t2i(prompt, callback=lambda step, total, preview: False, **kwargs)

    out = list(Handlers(stop_at_once, None, None, t2i.defaults()).generate(
        PROMPT, "", 4, 0.0, 32, 32, 2, 2, 3, False, "default", False, []))
    assert len(out) == 1 and out[0][2] == "Stopped before the first image was finished"


def test_random_seed_is_reported_back(handlers):
    seed_a = run_generate(handlers, random_seed=True, num_images=1)[-1][3]
    seed_b = run_generate(handlers, random_seed=True, num_images=1)[-1][3]
    assert isinstance(seed_a, int) and seed_a != seed_b


def test_uploaded_png_restores_the_controls(handlers):
    records = run_generate(handlers, seed=77, num_images=2, rerank=False)[-1][4]
    path = records[1]["path"]
    updates = handlers.restore(path)
    prompt, negative, seed, random_seed, steps, guidance, width, height, scheduler, info = updates
    assert prompt == PROMPT and negative == "" and seed == 78 and random_seed is False
    assert steps == 1 and guidance == 0.0 and width == 32 and height == 32
    assert scheduler == "default" and "tiny-sd" in info
    assert controls_from_metadata(read_png_metadata(path))["seed"] == 78


def test_png_without_settings_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no Text to Image settings"):
        controls_from_metadata(read_png_metadata(tmp_path / "plain.png"))
    with pytest.raises(gr.Error):
        Handlers(None, None, None, {"schedulers": ["default"]}).restore(str(tmp_path / "plain.png"))


def test_refine_and_edit_stream_previews_and_compare(handlers):
    records = run_generate(handlers, seed=9, num_images=2)[-1][4]
    out = list(handlers.refine(records, 1, 2, 0.01, []))
    assert len(out) == 4 and out[0][0] is not None and "step 0/2" in out[0][2]
    preview, (before, after), info, history_gallery, history = out[-1]
    assert before.size == after.size == (32, 32) and "→" in info and history[0]["meta"]["refined"] is True
    edited = list(handlers.edit(records, 0, "a blue square", 1.0, 2, history))
    preview, (before, after), info, history_gallery, history = edited[-1]
    assert "Directional CLIP" in info and len(history) == 2 and history[0]["meta"]["edit_prompt"] == "a blue square"


def test_errors_become_gr_error(handlers):
    with pytest.raises(gr.Error, match="`prompt`"):
        run_generate(handlers, prompt="")
    with pytest.raises(gr.Error, match="`width`"):
        run_generate(handlers, width=36)
    with pytest.raises(gr.Error, match="Generate an image first"):
        list(handlers.refine([], 0, 2, 0.01, []))
    missing = Handlers(None, None, None, {"schedulers": ["default"]}, load_error="model 'x' not available: tried ...")
    with pytest.raises(gr.Error, match="not available"):
        run_generate(missing)
