"""A tiny Stable-Diffusion-style pipeline built from config (seeded, random weights, local tokenizer, no Hub)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Shapes follow diffusers' own `get_dummy_components` for StableDiffusionPipeline tests.
UNET = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=4,
            attention_head_dim=4)
VAE = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=32)
TEXT = dict(hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=16)
# SD-Turbo's scheduler recipe: Euler, "trailing" spacing, SD's scaled-linear betas.
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
                 steps_offset=1, prediction_type="epsilon")


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A byte-level CLIP BPE vocabulary with no merges: every byte and byte</w>, plus the two special tokens."""
    from open_clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def make_tiny_sd(folder: Path, seed: int = 0):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=TEXT["max_position_embeddings"])
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        **TEXT, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=EulerDiscreteScheduler(**SCHEDULER), safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
