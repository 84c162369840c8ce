"""Issue 16 #4: each tab says what its models will really run before the first click (the generator and the
diffusers model as the CLIP dropdowns already do), and the loading notices are worded for what will happen."""

import huggingface_hub.constants
import pytest

import studio.hub
from studio.generators import generator_state
from studio.hub import diffusers_state
from tests.conftest import fake_hub_cache


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and checkpoint folder; the Hub unreachable until a test says otherwise."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("STUDIO_STYLEGAN_DIR", str(tmp_path / "dir"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(studio.hub, "hub_reachable", lambda timeout=3.0: False)
    return tmp_path


def online(monkeypatch):
    monkeypatch.setattr(studio.hub, "hub_reachable", lambda timeout=3.0: True)


def test_generator_state_says_demo_cached_download_or_missing(hub, monkeypatch):
    assert "bundled demo generator" in generator_state("demo-shapes")
    missing = generator_state("cat-256")
    assert "cannot be reached" in missing and "cannot be loaded" in missing and "demo-shapes" in missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in generator_state("cat-256")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online(monkeypatch)
    assert "downloaded once from aaronb/StyleGAN2 on first use" in generator_state("cat-256")
    fake_hub_cache(hub / "hub", "aaronb/StyleGAN2", "stylegan2-cat-config-f.pt", b"x")
    assert "cached checkpoint" in generator_state("cat-256")
    (hub / "dir").mkdir()
    (hub / "dir" / "stylegan2-cat-config-f.pt").write_bytes(b"x")
    assert str(hub / "dir") in generator_state("cat-256")
    assert "not found" in generator_state(str(hub / "nope.pt"))
    assert "a checkpoint file here" in generator_state(str(hub / "dir" / "stylegan2-cat-config-f.pt"))
    assert "downloaded once from me/gan" in generator_state("hf:me/gan/g.pt")


def test_diffusers_state_says_folder_cached_download_or_missing(hub, monkeypatch):
    assert "cannot be reached" in diffusers_state("someone/model") and "cannot be loaded" in diffusers_state(
        "someone/model")
    online(monkeypatch)
    assert "downloaded once on first use" in diffusers_state("someone/model")
    fake_hub_cache(hub / "hub", "someone/model", "model_index.json", b"{}")
    assert "cached here" in diffusers_state("someone/model")
    assert "a local folder" in diffusers_state(str(hub))
    assert "no such folder" in diffusers_state(str(hub / "missing"))


def test_each_tab_shows_its_model_state_before_the_first_click(hub, tiny_configs):
    import gradio as gr

    from pipelines.text2image_models import DEFAULT_MODEL
    from studio.app import build_app

    demo = build_app(clip="tiny-test-vit", device="cpu")
    lines = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "model-state" in (b.elem_classes or [])]
    texts = [b.value for b in lines]
    assert sum("`tiny-test-vit`: random weights" in t for t in texts) >= 3  # Lens, Vector Sketch, Text to Image
    assert any(t.startswith("Generator: `demo-shapes`: the bundled demo generator") and "CLIP: `shapes-clip`" in t
               for t in texts)
    assert any(t.startswith(f"Model: `{DEFAULT_MODEL}`: not cached here") for t in texts)
