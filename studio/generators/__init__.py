"""Latent-to-image generators: StyleGAN2 (rosinality-format checkpoints) and the bundled demo shapes generator.

`get_generator(name_or_path)` is the one factory: 'demo-shapes', a name from `checkpoints.CHECKPOINTS`, or a path
to a rosinality `.pt` / `.safetensors` file or an NVIDIA StyleGAN2-ADA `.pkl` (read safely: `ada_pickle`).
"""

from __future__ import annotations

import os

DEMO_GENERATOR = "demo-shapes"


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
