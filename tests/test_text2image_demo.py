"""The demo diffusion model's wiring: `shapes-diffusion` resolves by name wherever a Text to Image model name is
resolved, through Stable Diffusion's own pipeline class, and a missing bundled folder is a named error. The folder
here is one the training script's builders write (seeded, untrained), put where the bundled one is looked for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("train_demo_diffusion", ROOT / "scripts" / "train_demo_diffusion.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path_factory.mktemp("assets") / "shapes-diffusion"
    tok = script.build_tokenizer(folder / "tokenizer")
    torch.manual_seed(0)
    script.save_pipeline(folder, script.build_vae(), script.build_text_encoder(tok), tok, script.build_unet())
    return folder


@pytest.fixture
def bundled(demo_folder, monkeypatch) -> Path:
    import pipelines.text2image_models as models

    monkeypatch.setattr(models, "demo_model_folder", lambda: demo_folder)
    return demo_folder


def test_loads_by_name_and_by_env(bundled, monkeypatch):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from pipelines.text2image import Text2ImagePipeline
    from pipelines.text2image_models import DEMO_MODEL, resolve_pipeline

    t2i = Text2ImagePipeline.from_pretrained("shapes-diffusion", device="cpu")
    assert t2i.model_name == DEMO_MODEL and t2i.source == "the bundled demo model"
    assert isinstance(t2i.pipe, StableDiffusionPipeline) and isinstance(t2i.pipe.unet, UNet2DConditionModel)
    assert t2i.pipe.unet.dtype == t2i.pipe.text_encoder.dtype == torch.float32  # fp16 on disk, fp32 on a CPU
    assert (t2i.config.width, t2i.config.height, t2i.config.num_steps, t2i.config.guidance_scale) == (64, 64, 20, 5.0)
    assert not t2i.preset.one_step
    out = t2i("a red circle", num_images=1, num_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    monkeypatch.setenv("STUDIO_T2I_MODEL", "shapes-diffusion")
    pipe, name, where = resolve_pipeline()
    assert name == DEMO_MODEL and where == "the bundled demo model" and type(pipe) is StableDiffusionPipeline


def test_a_missing_bundled_folder_is_a_named_error(monkeypatch, tmp_path):
    import pipelines.text2image_models as models
    from studio.hub import WeightsNotFoundError

    monkeypatch.setattr(models, "demo_model_folder", lambda: tmp_path / "shapes-diffusion")
    with pytest.raises(WeightsNotFoundError, match="shapes-diffusion") as err:
        models.resolve_pipeline("shapes-diffusion")
    assert "scripts/train_demo_diffusion.py" in str(err.value)


def test_offline_and_uncached_the_demo_model_stands_in_with_a_notice(bundled, monkeypatch, tmp_path):
    """Like the demo CLIP: the tab gets `shapes-diffusion`, and the line under its title says so before the first
    click, with what was tried and how to supply the model."""
    import gradio as gr

    from studio import app
    from studio.ui.text2image import build

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # the default model is not cached here
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("STUDIO_T2I_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    functions = app.make_text2image_functions("cpu", "shapes-clip")
    assert "load_error" not in functions and functions["model"] == "shapes-diffusion" and not functions["one_step"]
    state = functions["model_state"]()
    assert state.startswith("Model: `stabilityai/sd-turbo`: not cached here")
    assert "the bundled demo model `shapes-diffusion` stands in" in state
    assert "HF_HUB_OFFLINE" in state and "STUDIO_T2I_MODEL" in state  # what was tried, how to supply it
    assert functions["specs"]["text2image"]["width"].default == 64  # the demo model's own settings
    demo = build(**functions)
    markdown = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert state in markdown  # on the page before the first click
    assert any(m.startswith("### Text to Image · `shapes-diffusion`") for m in markdown)
    assert any(isinstance(b, gr.Button) for b in demo.blocks.values())  # a working tab, not a message
