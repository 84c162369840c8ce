"""The bundled demo CLIP (studio/assets/models/shapes-clip.*) through the scorer: size, loading, quality bar."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from studio.demo.zeroshot import zero_shot_accuracy

WEIGHTS = Path(__file__).resolve().parent.parent / "studio" / "assets" / "models" / "shapes-clip.safetensors"
FRESH_SEED = 2_000_000_000  # neither training (< 1e9) nor the training script's evaluation (1e9 + ...) used these


def test_weights_file_is_small_and_fp16():
    assert WEIGHTS.stat().st_size <= 10 * 1000 * 1000
    sd = load_file(str(WEIGHTS))
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}  # fp16 storage


def test_scorer_loads_the_demo_model(demo_scorer):
    assert demo_scorer.is_demo and demo_scorer.image_size == 64 and demo_scorer.embed_dim == 128
    assert all(p.dtype == torch.float32 for p in demo_scorer.model.parameters())  # upcast from fp16


def test_zero_shot_meets_the_quality_bar_on_fresh_seeds(demo_scorer):
    """Issue 4's bar, with the studio's own prompt ensemble ("shapes" templates), on 300 unseen images."""
    res = zero_shot_accuracy(demo_scorer.encode_image, lambda names: demo_scorer.encode_prompts(names, "shapes"),
                             n=300, seed=FRESH_SEED)
    acc = res.accuracy
    assert acc["colour"] >= 0.95 and acc["shape"] >= 0.85 and acc["position"] >= 0.80, acc


def test_colour_words_rank_big_canvases(demo_scorer):
    """A 224x224 drawing (CLIPDraw's canvas size, resized down by the scorer) scores highest for its colour."""
    from studio.demo.shapes import COLOUR_NAMES, make_sample

    samples = [make_sample(FRESH_SEED + 10_000 + i, image_size=224, two_object_prob=0.0, scribble_prob=0.0)
               for i in range(60)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255.0 for s in samples])
    scores = demo_scorer.score(images, [f"a {c} shape" for c in COLOUR_NAMES])  # (60, 6)
    truth = torch.tensor([COLOUR_NAMES.index(s.objects[0].colour) for s in samples])
    assert (scores.argmax(1) == truth).float().mean() >= 0.9
