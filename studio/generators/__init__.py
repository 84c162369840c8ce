"""Latent-to-image generators: StyleGAN2 (rosinality-format checkpoints) and the bundled demo shapes generator.

`get_generator(name_or_path)` is the one factory: 'demo-shapes', a name from `checkpoints.CHECKPOINTS`, or a path
to a rosinality `.pt` / `.safetensors` file or an NVIDIA StyleGAN2-ADA `.pkl` (read safely: `ada_pickle`).
"""

from __future__ import annotations

import os

from studio.generators.base import DEMO_GENERATOR


def available_generators() -> list[str]:
    from studio.generators.checkpoints import CHECKPOINTS

    return [DEMO_GENERATOR, *CHECKPOINTS]


def get_generator(name_or_path: str | os.PathLike | None = None, device: str | None = None):
    """Build a generator. `None` reads `STUDIO_STYLEGAN`, else the demo. Unknown names list the valid ones."""
    import torch

    from studio.generators.checkpoints import load_generator
    from studio.generators.shapes import ShapesGenerator

    name = name_or_path if name_or_path is not None else os.environ.get("STUDIO_STYLEGAN") or DEMO_GENERATOR
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if str(name) == DEMO_GENERATOR:
        return ShapesGenerator().to(dev)
    return load_generator(name, device=dev)


def generator_state(name: str) -> str:
    """What a generator choice will really run, said before anything loads (as `studio.hub.clip_state` says it for
    a CLIP): the bundled demo, a checkpoint file here, a cached one, a download to come, or what is missing and
    why. Looks only at local files and, where a download would be needed, the Hub's reachability."""
    from pathlib import Path

    from studio.generators.checkpoints import CHECKPOINTS, checkpoint_dir
    from studio.hub import hub_file_state

    name = str(name or "").strip()
    if name == DEMO_GENERATOR:
        return f"`{name}`: the bundled demo generator (one soft shape on a plain background, 64 px), no download"
    if name in CHECKPOINTS and not Path(name).is_file():
        info = CHECKPOINTS[name]
        local = checkpoint_dir() / info.filename
        if local.is_file():
            return f"`{name}`: checkpoint at {local}; loaded on first use"
        kind, detail = hub_file_state([(repo, (file,)) for repo, file in info.sources])
        where = info.sources[0][0] if info.sources else "the Hub"
        hint = f"put {info.filename} in {checkpoint_dir()}"
    elif name.startswith("hf:"):
        parts = name.removeprefix("hf:").split("/")
        if len(parts) < 3 or not all(parts):
            return f"`{name}`: not a valid 'hf:OWNER/REPO/FILE.pt'"
        where = "/".join(parts[:2])
        kind, detail = hub_file_state([(where, ("/".join(parts[2:]),))])
        hint = "give a local path"
    else:
        path = Path(name).expanduser()
        if path.is_file():
            return f"`{name}`: a checkpoint file here; loaded on first use"
        return f"`{name}`: not found (give a checkpoint file, 'hf:OWNER/REPO/FILE.pt' or {DEMO_GENERATOR})"
    if kind == "cache":
        return f"`{name}`: cached checkpoint; loaded on first use"
    if kind == "download":
        return f"`{name}`: not cached here; downloaded once from {where} on first use, then cached"
    return f"`{name}`: not here and {detail}, so it cannot be loaded (pick {DEMO_GENERATOR}, or {hint})"
