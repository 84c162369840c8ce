"""Issue 17: a public server (a Space, or `--public`) survives its visitors; a local one keeps its freedom.

Each test reproduces an attack at a small scale and asserts the refusal or the bound: typed specs, paths and
`hf:` downloads refused before any loader runs, a file-existence oracle closed, uploads capped, every run
stopped at the server's time limit with its result, a cancelled run freed, old outputs deleted.
"""

from __future__ import annotations

import os
import time

import pytest

from studio.trust import Policy

ATTACKS = ["ViT-B-32:/etc/passwd", "ViT-B-32:/root/.ssh/id_rsa", "ViT-H-14/random", "ViT-e-14",
           "ViT-bigG-14/laion2b_s39b_b160k", "hf-hub:someone/model", "../../../../etc/passwd"]


def public(**kw) -> Policy:
    return Policy.from_settings(public=True, environ={}, **{"clip": "ViT-B-32/openai", **kw})


# ------------------------------------------------------------------------------------------------------- policy
def test_a_space_is_public_by_itself_and_a_plain_server_is_local():
    assert Policy.from_settings(environ={"SPACE_ID": "someone/studio"}).public
    assert Policy.from_settings(environ={"STUDIO_PUBLIC": "1"}).public
    local = Policy.from_settings(environ={})
    assert not local.public and local.max_run_s is None and local.output_ttl_s is None
    pub = public()
    assert pub.max_run_s == 600 and pub.max_upload_mb == 20 and pub.output_ttl_s == 3600
    with pytest.raises(ValueError, match="max_run_s"):
        Policy.from_settings(public=True, environ={}, max_run_s=0)


@pytest.mark.parametrize("spec", ATTACKS)
def test_public_server_refuses_every_spec_the_operator_did_not_list(spec):
    with pytest.raises(ValueError, match=r"`model` .* not offered on this server"):
        public().check_clip(spec)
    assert Policy().check_clip(spec) == spec  # a local server's own user may type anything


def test_public_server_offers_the_listed_models_and_the_bundled_demos():
    pol = public(clip="ViT-B-32/openai,RN50/openai", generators="ffhq-256")
    assert pol.clip_choices(["ViT-L-14/openai"]) == ["ViT-B-32/openai", "RN50/openai", "shapes-clip"]
    assert pol.check_clip("shapes-clip") == "shapes-clip"
    assert pol.generator_choices(["ffhq-1024"]) == ["ffhq-256", "demo-shapes"]
    assert pol.loss_choices() == ["RN50/openai"]
    with pytest.raises(ValueError, match="`generator`"):
        pol.check_generator("hf:someone/repo/evil.pt")
    # Locally the listed models come first, then the common ones.
    assert Policy.from_settings(environ={}, clip="shapes-clip").clip_choices(["RN50/openai"])[-1] == "RN50/openai"


def test_the_refusal_is_no_file_existence_oracle():
    pol = public()
    messages = []
    for path in ("/etc/passwd", "/no/such/file"):
        with pytest.raises(ValueError) as err:
            pol.check_clip(f"ViT-B-32:{path}")
        messages.append(str(err.value).replace(path, "PATH"))
    assert messages[0] == messages[1]


# ----------------------------------------------------------------------------------------------------- handlers
def test_public_handlers_refuse_before_any_loader_runs(monkeypatch, tiny_configs):
    """An API call skips the page's dropdown: every handler checks again, and nothing is read or downloaded."""
    import studio.app as app
    import studio.generators.checkpoints as ckpt

    def boom(*a, **k):
        raise AssertionError("a loader ran for a refused spec")

    monkeypatch.setattr(app, "get_scorer", boom)
    monkeypatch.setattr(ckpt, "resolve_hub_checkpoint", boom)
    monkeypatch.setattr(ckpt, "read_checkpoint", boom)
    pol = public()
    lens = app.make_lens_functions("cpu", pol)
    with pytest.raises(ValueError, match="not offered"):
        lens["classify"]("ViT-B-32:/etc/passwd", None, "a, b")
    moments = app.make_lens_video_detect_functions("cpu", pol)
    with pytest.raises(ValueError, match="not offered"):
        next(moments["video"]["run"]("ViT-B-32:/etc/passwd", "clip.mp4", "a cat", None))
    with pytest.raises(ValueError, match="not offered"):
        next(moments["detect"]["run"]("ViT-H-14/random", "clip", None, "a cat", None))
    sketch = app.make_sketch_functions("cpu", pol)
    with pytest.raises(ValueError, match="not offered"):
        next(sketch["clipdraw"]("ViT-H-14/random", "a cat", None, {}))
    with pytest.raises(ValueError, match="`loss_model`"):
        next(sketch["clipasso"]("ViT-B-32/openai", "ViT-e-14", None, {}))
    latent = app.make_latent_functions("cpu", pol)
    for generator in ("hf:someone/repo/g.pt", "../../../../etc/passwd"):
        with pytest.raises(ValueError, match="`generator`"):
            latent["sample"](generator, "shapes-clip", {})


def test_public_page_offers_no_custom_model_values(tiny_configs):
    import gradio as gr

    from studio import app

    demo = app.build_app(device="cpu", policy=public(clip="tiny-test-vit"))
    try:
        model_fields = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and "model" in str(b.label)
                        or isinstance(b, gr.Dropdown) and b.label == "Generator"]
        assert len(model_fields) >= 4
        assert not any(b.allow_custom_value for b in model_fields)
        for b in model_fields:
            assert all(c[1] in ("tiny-test-vit", "shapes-clip", "demo-shapes", "(same as CLIP model)")
                       for c in b.choices), b.choices
    finally:
        demo.close()
    local = app.build_app(device="cpu", policy=Policy.from_settings(environ={}, clip="tiny-test-vit"))
    try:
        assert all(b.allow_custom_value for b in local.blocks.values()
                   if isinstance(b, gr.Dropdown) and "model" in str(b.label))
    finally:
        local.close()


# ------------------------------------------------------------------------------------------------------ outputs
def test_outputs_live_under_one_root_and_old_ones_are_swept(tmp_path, monkeypatch):
    from PIL import Image

    from studio import outputs
    from studio.progress import Result

    monkeypatch.setenv("STUDIO_OUTPUT_DIR", str(tmp_path))
    old = Result(image=Image.new("RGB", (8, 8))).save()["png"].parent
    new = Result(image=Image.new("RGB", (8, 8))).save()["png"].parent
    assert old.parent == new.parent == tmp_path
    past = time.time() - 7200
    for path in (*old.iterdir(), old):  # a folder's age is its newest file's (Gradio re-touches a served file)
        os.utime(path, (past, past))
    assert outputs.sweep(3600) == 1
    assert not old.exists() and new.exists()


# ------------------------------------------------------------------------------------------- through the server
def serve_public(**limits):
    """The real app as a Space runs it (public policy, its launch options), on a free loopback port."""
    import socket

    from studio import app

    pol = Policy.from_settings(public=True, environ={}, clip="tiny-test-vit", **limits)
    demo = app.build_app(device="cpu", policy=pol)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.queue(demo, pol)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_options(pol))
    return demo, f"http://127.0.0.1:{port}/"


LONG_DRAW = dict(param_0="tiny-test-vit", param_1="a red circle", param_5=None, param_6=4, param_7=2000,
                 param_8=64, api_name="/sketch_clipdraw")  # 2000 steps of 4 strokes on a 64 px canvas


@pytest.mark.e2e
def test_public_server_through_its_api(tiny_configs, tmp_path):
    import httpx
    from gradio_client import Client

    demo, url = serve_public(max_upload_mb=0.05, max_run_s=3)
    try:
        client = Client(url, verbose=False)
        # A typed spec or a path is refused with a message, and the server keeps answering.
        for spec in ("ViT-B-32:/etc/passwd", "ViT-H-14/random"):
            with pytest.raises(Exception, match="not in the list of choices|not offered"):
                client.predict(spec, None, "a, b", api_name="/lens_classify")
        # An upload over the cap is turned away by Gradio before any handler sees it; a small one is taken.
        big, small = tmp_path / "big.png", tmp_path / "small.png"
        big.write_bytes(b"\0" * 200_000)
        small.write_bytes(b"\0" * 1000)
        with open(big, "rb") as fh:
            r = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", fh)})
        assert r.status_code == 413, r.text
        with open(small, "rb") as fh:
            assert httpx.post(url + "gradio_api/upload", files={"files": ("small.png", fh)}).status_code == 200
        # A long run stops at the server's limit (3 s) with its result and a notice saying why.
        text = " ".join(str(v) for v in client.predict(**LONG_DRAW))
        assert "stopped at step" in text and "stops every run after 3 s" in text
    finally:
        demo.close()


@pytest.mark.e2e
def test_a_cancelled_run_is_stopped_and_forgotten(tiny_configs):
    """Cancelling through the API (the page closed, `job.cancel()`) ends the run between steps: no run stays
    registered, so nothing keeps the CPU busy (the run's own limit here is the default 600 s)."""
    from gradio_client import Client

    from studio.ui.common import RUNS

    demo, url = serve_public()
    try:
        client = Client(url, verbose=False)
        job = client.submit(**LONG_DRAW)
        deadline = time.time() + 60
        while RUNS.active() == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert RUNS.active() == 1
        job.cancel()
        deadline = time.time() + 60
        while RUNS.active() and time.time() < deadline:
            time.sleep(0.2)
        assert RUNS.active() == 0
    finally:
        demo.close()


# ------------------------------------------------------------------------------------------ SVG-seeded CLIPDraw
def long_lines_svg(n: int, width: float, size: int = 512) -> str:
    lines = "".join(f'<path d="M0 {i} L{size} {size - i}" stroke="black" stroke-width="{width}" fill="none"/>'
                    for i in range(n))
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">{lines}</svg>'


def test_svg_seeded_clipdraw_is_refused_before_the_first_render_when_too_much_work(demo_scorer, monkeypatch):
    """Issue 17 #5: 64 long lines at canvas 512 took 4.9 GB for one step; the work is counted first now."""
    import pipelines.clipdraw as cd
    from studio.render.cost import MAX_RENDER_WORK

    renders = []
    monkeypatch.setattr(cd, "render", lambda *a, **k: renders.append(1) or (_ for _ in ()).throw(AssertionError))
    pipe = cd.CLIPDrawPipeline(demo_scorer)
    with pytest.raises(ValueError, match=r"`init_svg` would take too much work") as err:
        pipe(prompt="lines", init_svg=long_lines_svg(512, 100), num_strokes=0, canvas_size=1024,
             max_stroke_width=200, num_steps=1)
    assert f"{MAX_RENDER_WORK / 1e6:.0f} M" in str(err.value)
    assert renders == []


def test_svg_widths_start_inside_the_runs_range(demo_scorer, monkeypatch):
    """An SVG's stroke width of 1e6 is drawn at `max_stroke_width` from the first render on (the run projects
    widths to its range after every step; the first render came before that)."""
    import pipelines.clipdraw as cd

    widest = []
    real = cd.render

    def spy(scene, *a, **k):
        widest.append(float(scene.widths.max()))
        return real(scene, *a, **k)

    monkeypatch.setattr(cd, "render", spy)
    cd.CLIPDrawPipeline(demo_scorer)(prompt="lines", init_svg=long_lines_svg(4, 1e6, 64), num_strokes=0,
                                     canvas_size=64, num_steps=1, max_stroke_width=8)
    assert widest and max(widest) <= 8


def test_errors_reach_the_page_without_terminal_codes_or_server_folders(tmp_path):
    import tempfile

    import gradio as gr

    from studio.ui.common import user_errors

    path = os.path.join(tempfile.gettempdir(), "gradio", "abc123", "photo.png")

    @user_errors
    def handler():
        raise ValueError(f"\x1b[31mboom\x1b[0m: `image` {path} could not be read")

    handler.studio_limits.custom_models = False  # what one_gpu_queue hands a public server's handlers
    with pytest.raises(gr.Error) as err:
        handler()
    assert err.value.message == "boom: `image` …/gradio/abc123/photo.png could not be read"
    handler.studio_limits.custom_models = True  # a local server shows its own user the whole path
    with pytest.raises(gr.Error) as err:
        handler()
    assert err.value.message == f"boom: `image` {path} could not be read"


def test_an_empty_checkpoint_says_it_is_empty(tmp_path):
    from studio.generators.checkpoints import load_generator
    from studio.hub import load_state_dict

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for load in (load_generator, load_state_dict):
        with pytest.raises(ValueError, match=r"the file is empty \(0 bytes\)"):
            load(empty)
