"""Issue 22: a public server survives its visitors, round 2 (items 3-6 and 8-12; 1, 2 and 7 are tested beside their
fixes). Each test reproduces an attack at a small scale, generated here, and asserts the refusal or the bound by
counts, bytes or memory, never by time."""

from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin


# ---------------------------------------------------------------------------------------- #8 lone surrogates
@pytest.mark.parametrize("text", ["\ud800", "a red \udfff circle"])
def test_a_lone_surrogate_is_refused_by_name_before_work(text):
    from studio.tasks import check_text, check_texts

    with pytest.raises(ValueError, match=r"`prompt` holds a lone surrogate \(U\+D[8F]00"):
        check_text(text.replace("\udfff", "\udf00"), "prompt")
    with pytest.raises(ValueError, match="`labels` holds a lone surrogate"):
        check_texts(["a cat", text], "labels", 8)
    assert check_text("a red circle 🔴", "prompt") == "a red circle 🔴"  # a real astral character is text


def test_a_lone_surrogate_in_a_text_setting_is_refused_by_name():
    from studio.tasks import ParamSpec, check_value

    spec = ParamSpec(name="negative_prompt", kind="text", default="", lo=None, hi=None, help="")
    with pytest.raises(ValueError, match="`negative_prompt` holds a lone surrogate"):
        check_value(spec, "blurry \ud800")


# ------------------------------------------------------------------------------------- #10 PNG settings chunk
def png_with_settings(path, raw: str):
    info = PngImagePlugin.PngInfo()
    info.add_text("clip-studio", raw)
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("raw", ["[" * 200_000, '{"a": ' * 50_000 + "1" + "}" * 50_000,
                                 json.dumps({"prompt": "x" * 400_000})])
def test_a_crafted_settings_chunk_is_unreadable_not_a_crash(tmp_path, raw):
    from studio.media import read_png_metadata

    assert read_png_metadata(png_with_settings(tmp_path / "bomb.png", raw)) is None


def test_settings_with_brackets_in_strings_are_read(tmp_path):
    from studio.media import read_png_metadata, save_png

    meta = {"prompt": 'a "[[[[[" sign \\ and ' + "{" * 100, "nested": {"a": [[1, 2], {"b": [3]}]}}
    assert read_png_metadata(save_png(Image.new("RGB", (16, 16)), tmp_path / "ok.png", meta)) == meta


# ------------------------------------------------------------------------------- #4 Gradio's cache expires too
@pytest.mark.e2e
def test_a_streamed_runs_files_leave_gradios_cache_after_the_ttl(tiny_configs, tmp_path, monkeypatch):
    """A CLIPDraw run streams (its first update is `gr.skip()`), so Gradio copies its output components per session
    and never registers their cached files for `delete_cache`; the studio's sweep deletes them after the TTL."""
    import time

    from gradio_client import Client
    from test_public_server import LONG_DRAW, serve_public

    from studio import outputs

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setenv("STUDIO_OUTPUT_DIR", str(tmp_path / "outputs"))
    demo, url = serve_public(output_ttl_s=60)
    try:
        client = Client(url, verbose=False)
        client.predict(**{**LONG_DRAW, "param_7": 2})
        served = [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".svg", ".png", ".mp4", ".gif")]
        assert len(served) >= 2, served  # the run's downloads, copied into Gradio's cache
        assert outputs.sweep_all(60) == 0  # younger than the TTL: kept
        assert outputs.sweep_all(60, now=time.time() + 61) >= len(served) // 2
        assert not [p for p in cache.rglob("*") if p.is_file()]
        assert not list((tmp_path / "outputs").iterdir())
    finally:
        demo.close()
