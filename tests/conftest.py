"""Shared fixtures: tiny CLIP models built from config (seeded, random weights) and the bundled demo CLIP.

Nothing here downloads: HF_HUB_OFFLINE is forced on for the whole test session.
"""

from __future__ import annotations

import json
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"  # no model hub in tests, ever
os.environ.setdefault("STUDIO_DEVICE", "cpu")
# One thread for the whole session, pinned here, before any fixture is built (a module-scoped fixture used to train
# on every core because the pin was a function-scoped fixture that ran after it), and for every interpreter a test
# starts (they inherit the environment). The models here are tiny, so a second OpenMP thread buys nothing, and on a
# busy 2-core machine it mostly waits for a core (measured 5-40x slower; the mapper fixture 60.6 s of CPU on 2
# threads against 5.3 s on one).
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


TINY_CONFIGS = {
    # A ViT tower: patch 8 on 32×32 images, 2 blocks; the text tower keeps the stock tokenizer's vocabulary.
    "tiny-test-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    # A ModifiedResNet tower (stages 1-4), the kind CLIPasso's geometric loss reads.
    "tiny-test-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
}


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory) -> list[str]:
    """Register the tiny configs with open_clip once; returns their names."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip_configs")
    for name, cfg in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return list(TINY_CONFIGS)


def fake_hub_cache(root, repo_id: str, filename: str, payload: bytes):
    """Write `payload` where huggingface_hub's cache keeps a downloaded file (models--OWNER--REPO/{refs/main,
    snapshots/REV/FILE}); point `huggingface_hub.constants.HF_HUB_CACHE` at `root` to use it. Returns the path."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(payload)
    return snap / filename


def make_tiny_scorer(name: str = "tiny-test-vit", seed: int = 0):
    """A fresh (uncached) tiny scorer with seeded random weights."""
    from studio.hub import resolve_clip
    from studio.scorer import _build

    torch.manual_seed(seed)
    return _build(resolve_clip(name), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_scorer(tiny_configs):
    return make_tiny_scorer("tiny-test-vit")


@pytest.fixture(scope="session")
def tiny_rn_scorer(tiny_configs):
    return make_tiny_scorer("tiny-test-rn")


@pytest.fixture(scope="session")
def demo_scorer():
    """The bundled demo CLIP (studio/assets/models/shapes-clip.*)."""
    from studio.hub import DEMO_CLIP, MODELS_DIR
    from studio.scorer import get_scorer

    if not (MODELS_DIR / f"{DEMO_CLIP}.safetensors").is_file():
        pytest.fail("the bundled demo CLIP is missing from studio/assets/models/")
    return get_scorer(DEMO_CLIP, device="cpu")


@pytest.fixture(scope="module")
def vit(tiny_configs):
    """A tiny ViT CLIP of the module's own: its text cache is its own, so other modules' cache counts hold."""
    return make_tiny_scorer("tiny-test-vit")


@pytest.fixture(scope="module")
def rn(tiny_configs):
    """A tiny ResNet CLIP of the module's own."""
    return make_tiny_scorer("tiny-test-rn")


def launch_local(demo) -> str:
    """Queue and launch a Gradio app on a free loopback port without blocking; returns its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"
