"""Latent Editing tab: the plain functions app.py wires, and the tab building with fakes (no torch in the UI)."""

from __future__ import annotations

import ast
import pathlib
import time

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.styleclip import StyleCLIPPipeline, make_ui_functions
from studio.generators.stylegan2 import Generator
from studio.ui import latent_editing


@pytest.fixture
def functions(tiny_scorer, tmp_path):
    torch.manual_seed(0)
    g = Generator(size=16, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=8)
    pipe = StyleCLIPPipeline(g, tiny_scorer, cache_dir=tmp_path)
    asked = []

    def get_pipeline(generator, clip):
        asked.append((generator, clip))
        return pipe

    fns = make_ui_functions(get_pipeline)
    fns["asked"], fns["pipe"] = asked, pipe
    return fns


def test_sample_edit_global_and_invert_through_plain_functions(functions):
    s = functions["sample"]("tiny", "tiny-test-vit", 4, 0.7)
    assert s["image"].dtype == np.uint8 and s["image"].shape == (16, 16, 3)
    updates = list(functions["edit"]("tiny", "tiny-test-vit", s["state"], 4, "a red circle", 4, 0.008, 0.0, 1.0))
    final = updates[-1]
    assert [u["progress"] for u in updates[:-1]] == ["step 4/4"] and "after" not in updates[0]
    np.testing.assert_array_equal(final["before"], s["image"])  # the edit started from the sample
    assert "CLIPScore" in final["info"]
    # a state from another generator/CLIP is ignored (the seed decides the start)
    other = functions["sample"]("other", "tiny-test-vit", 4, 0.7)["state"]
    again = list(functions["edit"]("tiny", "tiny-test-vit", other, 4, "a red circle", 1, 0.0, 0.0, 0.0))[-1]
    assert again["before"].shape == (16, 16, 3)

    seen = []
    msg = functions["relevance"]("tiny", "tiny-test-vit", 1, lambda d, t: seen.append((d, t)))
    assert "channels" in msg and seen == [(1, 1)]
    out = functions["global_edit"]("tiny", "tiny-test-vit", s["state"], 4, "a circle", "a red circle", 3.0, 0.0, 1)
    assert out["after"].shape == (16, 16, 3) and "channels moved" in out["info"]
    with pytest.raises(ValueError, match="`beta`"):
        functions["global_edit"]("tiny", "tiny-test-vit", s["state"], 4, "a circle", "a red circle", 3.0, 1.0, 1)

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    ticks = []
    inv = functions["invert"]("tiny", "tiny-test-vit", photo, 3, lambda d, t: ticks.append((d, t)))
    assert inv["image"].shape == (16, 16, 3) and "MSE" in inv["info"] and ticks == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="`image`"):
        functions["invert"]("tiny", "tiny-test-vit", None, 3)


def test_edit_stops_when_the_page_cancels(functions, monkeypatch):
    pipe, finished = functions["pipe"], []
    original = pipe.edit
    monkeypatch.setattr(pipe, "edit", lambda *a, **k: finished.append(original(*a, **k)) or finished[-1])
    run = functions["edit"]("tiny", "tiny-test-vit", None, 0, "a cat", 1000, 0.008, 0.0, 1.0)
    assert next(run)["progress"] == "step 10/1000"
    run.close()  # what Gradio does on Stop: the optimisation ends at its next step instead of running on
    deadline = time.monotonic() + 30
    while not finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished and finished[0].steps_run < 1000


def test_app_says_what_a_registry_generator_needs_and_goes_on_serving(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from studio.app import make_latent_functions

    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fns = make_latent_functions("cpu")
    first = fns["sample"]("demo-shapes", "shapes-clip", 1, 0.7)
    with pytest.raises(FileNotFoundError) as err:  # offline (conftest): nothing downloads, the message says why
        fns["sample"]("ffhq-1024", "shapes-clip", 1, 0.7)
    for needle in ("stylegan2-ffhq-config-f.pt", "aaronb/StyleGAN2", "HF_HUB_OFFLINE", str(tmp_path)):
        assert needle in str(err.value)
    again = fns["sample"]("demo-shapes", "shapes-clip", 1, 0.7)
    np.testing.assert_array_equal(again["image"], first["image"])


def test_small_images_are_shown_enlarged_pixel_for_pixel():
    small = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    big = latent_editing.shown(small)
    assert big.shape == (256, 192, 3)  # whole factor 4: the longer side reaches MIN_SHOWN
    np.testing.assert_array_equal(big[::4, ::4], small)
    np.testing.assert_array_equal(big[3::4, 3::4], small)
    large = np.zeros((300, 300, 3), np.uint8)
    assert latent_editing.shown(large) is large and latent_editing.shown(None) is None


def test_tab_builds_with_plain_callables_and_never_imports_torch():
    tree = ast.parse(pathlib.Path(latent_editing.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "torch" not in imported and "pipelines" not in imported

    def fake(*args, **kwargs):
        raise AssertionError("not called while building")

    with gr.Blocks() as demo:
        latent_editing.build(fake, fake, fake, fake, fake, ["demo-shapes"], "demo-shapes", ["shapes-clip"],
                             "shapes-clip")
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert {"latent_sample", "latent_invert", "latent_edit", "latent_relevance", "latent_global"} <= names
