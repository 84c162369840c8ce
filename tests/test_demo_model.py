"""The bundled demo CLIP (assets/models/shapes-clip.*): size, strict loading, and the issue-4 quality bar."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from studio.demo.zeroshot import ensemble_text, zero_shot_accuracy

MODELS = Path(__file__).resolve().parent.parent / "assets" / "models"
WEIGHTS = MODELS / "shapes-clip.safetensors"
FRESH_SEED = 2_000_000_000  # neither training (< 1e9) nor the training script's evaluation (1e9 + ...) used these


def test_weights_file_is_small_and_fp16():
    assert WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    sd = load_file(str(WEIGHTS))
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}  # fp16 storage


@pytest.fixture(scope="module")
def demo_model():
    open_clip.add_model_config(MODELS / "shapes-clip.json")
    model = open_clip.create_model("shapes-clip")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(WEIGHTS)).items()}
    model.load_state_dict(sd, strict=True)
    return model.eval(), open_clip.get_tokenizer("shapes-clip")


def test_zero_shot_meets_the_quality_bar_on_fresh_seeds(demo_model):
    model, tokenizer = demo_model
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    res = zero_shot_accuracy(lambda x: model.encode_image((x - mean) / std),
                             lambda names: ensemble_text(lambda t: model.encode_text(tokenizer(t)), names),
                             n=300, seed=FRESH_SEED)
    acc = res.accuracy
    assert acc["colour"] >= 0.95 and acc["shape"] >= 0.85 and acc["position"] >= 0.80, acc
