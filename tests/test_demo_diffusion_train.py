"""scripts/train_demo_diffusion.py runs, is reproducible, and writes a folder that Stable Diffusion's own pipeline
loads (two tiny steps per stage, CPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train_demo_diffusion.py"
PARTS = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
         "text_encoder/model.safetensors")


def _train(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    cmd = [sys.executable, str(SCRIPT), "--vae-steps", "2", "--vae-batch", "2", "--n-images", "8", "--steps", "2",
           "--batch-size", "4", "--snapshot-every", "0", "--eval-seeds", "0", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nan" not in res.stdout
    return out


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p}:{k}": v for p in PARTS for k, v in load_file(str(folder / p)).items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _script():
    spec = importlib.util.spec_from_file_location("train_demo_diffusion", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tokenizer_covers_the_caption_words(tmp_path):
    from studio.demo.shapes import make_sample

    script = _script()
    tok = script.build_tokenizer(tmp_path / "tokenizer")
    for word in script.caption_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    caption = make_sample(5).caption
    ids = tok(caption).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True).replace(" :", ":") == caption


@pytest.mark.slow
def test_training_is_reproducible_and_loads_as_stable_diffusion(tmp_path):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    a = _train(tmp_path, "a")
    b = _train(tmp_path, "b")
    assert _same(_tensors(a), _tensors(b))
    c = _train(tmp_path, "c", "--seed", "1")
    assert not _same(_tensors(c), _tensors(a))
    # fp16 on disk (the package cap), Stable Diffusion's classes when loaded
    assert all(v.dtype == torch.float16 for v in load_file(str(a / PARTS[0])).values())
    pipe = StableDiffusionPipeline.from_pretrained(str(a), local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)
