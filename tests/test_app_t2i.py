"""app.py's Text to Image wiring: the model loads on first use from STUDIO_T2I_MODEL, and an unavailable model
turns the tab into a message (no controls that could only fail)."""

from __future__ import annotations

import pytest

from conftest import launch_local
from t2i_tiny import make_tiny_sd

pytestmark = pytest.mark.e2e


def test_generate_through_the_app_with_a_local_model_folder(tiny_configs, tmp_path, monkeypatch):
    from gradio_client import Client

    from studio import app
    from studio.media import read_png_metadata

    folder = tmp_path / "tiny-sd"
    make_tiny_sd(tmp_path / "tok").save_pretrained(folder)
    monkeypatch.setenv("STUDIO_T2I_MODEL", str(folder))
    functions = app.make_text2image_functions("cpu", "tiny-test-vit")
    assert "load_error" not in functions and functions["defaults"]["model"] == str(folder)
    demo = app.build_app(clip="tiny-test-vit", device="cpu")
    url = launch_local(demo)
    try:
        client = Client(url, verbose=False)
        gallery, files, info, seed, history = client.predict(
            "a red circle", "", 1, 0.0, 32, 32, 2, 2, 7, False, "default", True, api_name="/t2i_generate")
        assert seed == 7 and len(files) == 2
        metas = [read_png_metadata(f) for f in files]
        assert sorted(m["seed"] for m in metas) == [7, 8]
        assert all(m["model"] == str(folder) for m in metas)
    finally:
        demo.close()


def test_unavailable_model_becomes_a_message(monkeypatch):
    from studio import app

    monkeypatch.setenv("STUDIO_T2I_MODEL", "nobody/no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    functions = app.make_text2image_functions("cpu", "tiny-test-vit")
    assert set(functions) == {"load_error", "defaults"} and functions["defaults"]["model"] == "nobody/no-such-model"
    msg = functions["load_error"]
    assert "nobody/no-such-model" in msg and "HF_HUB_OFFLINE" in msg and "STUDIO_T2I_MODEL" in msg
    from studio.ui.text2image import _as_markdown

    md = _as_markdown(msg)  # the advice after the list of places tried is its own paragraph, not the last item
    lines = md.splitlines()
    last_item = max(i for i, line in enumerate(lines) if line.lstrip().startswith("- "))
    assert lines[last_item + 1] == "" and "STUDIO_T2I_MODEL" in "\n".join(lines[last_item + 2:])
