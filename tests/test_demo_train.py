"""scripts/train_demo_clip.py runs, is reproducible, and its loss terms behave (two tiny steps, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def _train(tmp_path: Path, name: str, *extra: str) -> tuple[dict[str, torch.Tensor], str]:
    out = tmp_path / f"{name}.safetensors"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_demo_clip.py"), "--steps", "2", "--batch-size", "16",
           "--warmup", "1", "--eval-every", "0", "--eval-n", "20", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    # Tensors, not file bytes: safetensors writes its metadata map in no fixed order.
    return load_file(str(out)), res.stdout


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_training_is_reproducible_and_reports_accuracy(tmp_path):
    a, log = _train(tmp_path, "a", "--augment", "0.5")
    b, _ = _train(tmp_path, "b", "--augment", "0.5")
    assert _same(a, b)
    assert "held-out zero-shot accuracy" in log and "colour" in log and "nan" not in log
    c, _ = _train(tmp_path, "c", "--augment", "0.5", "--seed", "1")
    assert not _same(c, a)
