"""Zero-shot evaluation of a CLIP on held-out synthetic shapes, the way the studio classifies.

Follows CLIP's zero-shot recipe (Radford et al. 2021, sec. 3.1.4, "Prompt engineering and ensembling"): each class
name is put into every template, the L2-normalised text embeddings are averaged and renormalised, and an image
takes the class of highest cosine similarity. The templates are `studio.prompts.SHAPES_TEMPLATES`, the studio's
own ensemble for the demo model, so the accuracies printed by `scripts/train_demo_clip.py` and checked by the
tests are the accuracies a user of the scorer gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from studio.demo.shapes import COLOUR_NAMES, POSITION_PHRASES, POSITIONS, SHAPES, make_sample
from studio.prompts import SHAPES_TEMPLATES

# Class names per task; each is put into every template ("a drawing of a {}").
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "colour": tuple(f"{c} shape" for c in COLOUR_NAMES),
    "shape": SHAPES,
    "position": tuple(f"shape {POSITION_PHRASES[p]}" for p in POSITIONS),
}
# Held-out seeds start here; training draws seeds below it (scripts/train_demo_clip.py).
EVAL_SEED_OFFSET = 1_000_000_000


@dataclass
class ZeroShotResult:
    """Accuracy per task (fraction in [0, 1]) and the number of images each was measured on."""

    accuracy: dict[str, float]
    n_images: int


def eval_images(n: int, seed: int = EVAL_SEED_OFFSET) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`n` one-shape images from seeds `seed .. seed+n-1`: ((n, 3, H, W) floats in [0, 1], labels per task)."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    samples = [make_sample(seed + i, two_object_prob=0.0, scribble_prob=0.0) for i in range(n)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    labels = {
        "colour": torch.tensor([COLOUR_NAMES.index(s.objects[0].colour) for s in samples]),
        "shape": torch.tensor([SHAPES.index(s.objects[0].kind) for s in samples]),
        "position": torch.tensor([POSITIONS.index(s.objects[0].position) for s in samples]),
    }
    return images, labels


def ensemble_text(encode_text: Callable[[list[str]], torch.Tensor], class_names: Sequence[str],
                  templates: Sequence[str] = SHAPES_TEMPLATES) -> torch.Tensor:
    """(C, D) class embeddings: mean over templates of L2-normalised text embeddings, renormalised."""
    texts = [t.format(c) for c in class_names for t in templates]
    emb = torch.nn.functional.normalize(encode_text(texts).float(), dim=-1)  # (C*T, D)
    emb = emb.reshape(len(class_names), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1)


@torch.no_grad()
def zero_shot_accuracy(encode_image: Callable[[torch.Tensor], torch.Tensor],
                       encode_classes: Callable[[list[str]], torch.Tensor], n: int = 600,
                       seed: int = EVAL_SEED_OFFSET, batch_size: int = 200) -> ZeroShotResult:
    """Colour (6-way), shape (5-way) and position (5-way) zero-shot accuracy on `n` held-out images.

    `encode_image` maps (B, 3, H, W) floats in [0, 1] to image embeddings; `encode_classes` maps class names to
    (C, D) ensembled, normalised text embeddings (e.g. `lambda names: scorer.encode_prompts(names, "shapes")`).
    """
    images, labels = eval_images(n, seed)
    feats = torch.cat([torch.nn.functional.normalize(encode_image(images[i:i + batch_size]).float(), dim=-1)
                       for i in range(0, n, batch_size)])
    acc = {}
    for task, names in CLASS_NAMES.items():
        pred = (feats @ encode_classes(list(names)).float().T).argmax(dim=-1)
        acc[task] = float((pred == labels[task]).float().mean())
    return ZeroShotResult(acc, n)
