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


# ----------------------------------------------------------------------------------- #12 a visitor's queue share
@pytest.mark.e2e
def test_one_visitor_with_many_sessions_gets_two_waiting_jobs(tiny_configs):
    """Issue 22 #12: one client with 40 sessions filled all 32 queue slots. Now a visitor (a session, or a client
    address) has at most 2 jobs waiting; the next is refused with a message saying why."""
    import time

    from gradio_client import Client
    from test_public_server import LONG_DRAW, serve_public

    from studio.ui.common import RUNS

    demo, url = serve_public()
    jobs = []
    try:
        clients = [Client(url, verbose=False) for _ in range(4)]  # four sessions, one address
        jobs.append(clients[0].submit(**LONG_DRAW))
        deadline = time.time() + 60
        while RUNS.active() == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert RUNS.active() == 1  # running: not waiting
        jobs += [c.submit(**LONG_DRAW) for c in clients[1:]]
        deadline = time.time() + 60
        while not any(j.done() for j in jobs[1:]) and time.time() < deadline:
            time.sleep(0.1)
        refused = [j for j in jobs[1:] if j.done()]
        assert len(refused) == 1 and len(demo._queue) == 2
        with pytest.raises(Exception, match="400 Bad Request.*queue/join"):  # the page shows the message below
            refused[0].result()
        import httpx

        fn_index = next(i for i, f in demo.fns.items() if f.api_name == "sketch_clipdraw")
        r = httpx.post(url + "gradio_api/queue/join", json={"data": [], "fn_index": fn_index, "session_hash": "new"})
        assert r.status_code == 400 and "at most 2 per visitor" in r.json()["detail"], r.text
        assert len(demo._queue) == 2
    finally:
        for j in jobs:
            j.cancel()
        demo.close()


# ------------------------------------------------------------------------------------------ #6 the upload budget
def _post(url, files: list[tuple[str, bytes]]):
    import httpx

    return httpx.post(url + "gradio_api/upload", files=[("files", (n, b)) for n, b in files], timeout=60)


def _cached(cache) -> list:
    return [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.e2e
def test_uploads_are_bounded_per_request_and_in_all(tiny_configs, tmp_path, monkeypatch):
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    from test_public_server import serve_public

    demo, url = serve_public(max_upload_mb=0.1, upload_budget_mb=0.33)
    try:
        # More files in one request than the Lens gallery takes: refused, and nothing of it is kept.
        r = _post(url, [(f"{i}.png", b"\0" * 100) for i in range(65)])
        assert r.status_code == 400 and "at most 64" in r.text, r.text
        assert _cached(cache) == []
        # A request of more bytes than four files at the cap: refused before it is read.
        r = _post(url, [(f"{i}.png", b"\1" * 90_000) for i in range(6)])
        assert r.status_code == 413 and "at most" in r.text, r.text
        assert _cached(cache) == []
        # The budget (0.33 MB): three uploads of 90 KB fit, the fourth is refused, and the disk holds 270 KB.
        codes = [_post(url, [(f"{i}.png", bytes([i]) * 90_000)]).status_code for i in range(4)]
        assert codes == [200, 200, 200, 507], codes
        assert sum(p.stat().st_size for p in _cached(cache)) == 270_000
    finally:
        demo.close()


@pytest.mark.e2e
def test_a_runs_uploads_are_deleted_when_it_ends(tiny_configs, tmp_path, monkeypatch):
    from cases_lens import gallery
    from gradio_client import Client, handle_file

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    from test_public_server import serve_public

    demo, url = serve_public()
    try:
        files = []
        for i, im in enumerate(gallery()):
            files.append(tmp_path / f"upload-{i}.png")
            im.save(files[-1])
        out = Client(url, verbose=False).predict("tiny-test-vit", [handle_file(str(f)) for f in files], "a cat",
                                                  api_name="/lens_search")
        assert len(out[0]) == 2  # both images ranked
        assert not [p for p in _cached(cache) if p.name.startswith("upload-")]
    finally:
        demo.close()
