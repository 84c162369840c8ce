"""app.py's Text to Image wiring: the model loads on first use from STUDIO_T2I_MODEL, the tab's controls follow the
model family's config (schedulers included), and an unavailable model turns the tab into a message (no controls that
could only fail)."""

from __future__ import annotations

import gradio as gr
import pytest
from conftest import launch_local
from t2i_tiny import make_tiny_sd

pytestmark = pytest.mark.e2e


def test_generate_and_restore_through_the_app_with_a_local_model_folder(tiny_configs, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    from pipelines.text2image import Text2ImageConfig
    from pipelines.text2image_models import SCHEDULERS
    from studio import app
    from studio.media import read_png_metadata

    folder = tmp_path / "tiny-sd"  # an unknown model: the multi-step Stable Diffusion family
    make_tiny_sd(tmp_path / "tok").save_pretrained(folder)
    monkeypatch.setenv("STUDIO_T2I_MODEL", str(folder))
    functions = app.make_text2image_functions("cpu", "tiny-test-vit")
    assert "load_error" not in functions and functions["model"] == str(folder) and not functions["one_step"]
    family = Text2ImageConfig.for_model(str(folder))
    assert {n: s.default for n, s in functions["specs"]["text2image"].items()} == vars(family)
    demo = app.build_app(clip="tiny-test-vit", device="cpu")
    controls = {b.elem_id: b for b in demo.blocks.values() if (getattr(b, "elem_id", None) or "").startswith(
        "text2image--")}
    from test_ui_config import check_controls_match_configs

    # every control of the built app, Text to Image's included, equals its config (the family's, for this model)
    tasks = check_controls_match_configs(demo, cpu=True, specs_for=functions["specs"])
    assert {"text2image", "text2image-refine", "text2image-edit", "clipdraw"} <= tasks
    scheduler = controls["text2image--scheduler"]
    assert isinstance(scheduler, gr.Dropdown) and scheduler.visible
    assert [c[1] for c in scheduler.choices] == list(SCHEDULERS) and len(SCHEDULERS) > 1  # not only "default"
    assert controls["text2image--num_steps"].value == family.num_steps == 25
    url = launch_local(demo)
    try:
        client = Client(url, verbose=False)
        # prompt, random seed, num_steps, guidance_scale, width, height, num_images, batch_size, seed, scheduler,
        # rerank, negative_prompts
        gallery, files, info, seed, history, progress, preview = client.predict(
            "a red circle", False, 2, 3.0, 32, 32, 2, 2, 7, "euler_a", True, "blurry", api_name="/t2i_generate")
        assert seed == 7 and len(files) == 2
        metas = [read_png_metadata(f) for f in files]
        assert sorted(m["seed"] for m in metas) == [7, 8]
        assert all(m["model"] == str(folder) and m["scheduler"] == "euler_a" for m in metas)
        # a PNG made with a non-default scheduler restores it (and the rest of its settings)
        restored = client.predict(handle_file(files[0]), api_name="/t2i_restore")
        assert restored[:4] == ("a red circle", False, 2, 3.0) and restored[8] == metas[0]["seed"]
        assert restored[9] == "euler_a" and restored[11] == "blurry"
    finally:
        demo.close()


def test_unavailable_model_becomes_a_message(monkeypatch, tmp_path):
    import pipelines.text2image_models as models
    from studio import app

    monkeypatch.setattr(models, "demo_model_folder", lambda: tmp_path / "no-demo")  # a package without the demo
    monkeypatch.setenv("STUDIO_T2I_MODEL", "nobody/no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    functions = app.make_text2image_functions("cpu", "tiny-test-vit")
    assert set(functions) == {"load_error", "model", "model_state"} and functions["model"] == "nobody/no-such-model"
    assert "downloads are off (HF_HUB_OFFLINE), so it cannot be loaded" in functions["model_state"]()
    msg = functions["load_error"]
    assert "nobody/no-such-model" in msg and "HF_HUB_OFFLINE" in msg and "STUDIO_T2I_MODEL" in msg
    from studio.ui.text2image import _as_markdown, build

    md = _as_markdown(msg)  # the advice after the list of places tried is its own paragraph, not the last item
    lines = md.splitlines()
    last_item = max(i for i, line in enumerate(lines) if line.lstrip().startswith("- "))
    assert lines[last_item + 1] == "" and "STUDIO_T2I_MODEL" in "\n".join(lines[last_item + 2:])
    demo = build(**functions)  # the tab says so and offers no controls
    assert not any(isinstance(b, (gr.Button, gr.Slider)) for b in demo.blocks.values())

