"""Text to image with diffusers, which CLIP then reranks, refines and edits.

- Generation: any diffusers text-to-image pipeline; the default is SD-Turbo (Sauer et al. 2023, "Adversarial
  Diffusion Distillation"): 512x512, one step, guidance 0, as its model card prescribes.
- Rerank: CLIPScore (Hessel et al. 2021, 100 * max(cos, 0)) of every candidate against the prompt.
- Refine: ReNO (Eyring et al., NeurIPS 2024, "ReNO: Enhancing One-step Text-to-Image Models through Reward-based
  Noise Optimization"): gradient ascent on the initial noise of a one-step model with the CLIP reward, plus the
  negative log-likelihood of the noise norm under its chi distribution, so the noise stays a plausible sample;
  SGD with Nesterov momentum, gradient-norm clipping and best-iterate selection as in the authors' code.
- Edit: the directional CLIP loss of StyleGAN-NADA (Gal et al. 2022, eq. 3: the image-embedding change should point
  along the text-embedding change) applied to the kept output latent, plus an L2 pull toward the original latent.

Long operations exist in two shapes: `iter_generate` / `iter_refine` / `iter_edit` yield `Progress` items and end
with the result (the UI streams these; closing the generator stops it), and `__call__` / `refine` / `edit` run the
same generators to completion, calling `callback(step, total, preview)`; a callback returning False stops early.
A multi-step generation reports every denoising step and stops within the batch: the diffusers call runs in a worker
thread whose step callback reports to the generator and ends the call once stopped; the interrupted batch is dropped.
"""

from __future__ import annotations

import math
import os
import queue
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from studio.device import pick_device, pick_dtype
from studio.hub import WeightsNotFoundError, hub_reachable, offline
from studio.media import save_png
from studio.progress import drain
from studio.scorer import oom_guard

DEFAULT_MODEL = "stabilityai/sd-turbo"
MAX_SIDE = 1024  # SD 2.x/Turbo were trained at 512-768; larger sides mostly repeat content and cost quadratic memory
MAX_BATCH = 8  # images per forward pass; more rarely fits a consumer GPU at 512x512
MAX_IMAGES = 64  # candidates per rerank request
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
LOW_VRAM_BYTES = 6 * 1024**3  # below this, weights stay on the CPU between uses (SD-Turbo fp16 needs ~3.5 GB resident)
VAE_TILING_PIXELS = 768 * 768  # above this the VAE decodes in tiles (its activations dominate memory at 1024^2)


@dataclass(frozen=True)
class ModelPreset:
    """What a model is trained for; used as UI defaults and to decide whether refine applies."""

    steps: int
    guidance_scale: float
    size: int | None  # None: the UNet's sample_size times the VAE scale factor
    one_step: bool


# Known models by repo id (a local folder matches on its last path component).
PRESETS: dict[str, ModelPreset] = {
    "stabilityai/sd-turbo": ModelPreset(steps=1, guidance_scale=0.0, size=512, one_step=True),  # model card
    "stabilityai/sdxl-turbo": ModelPreset(steps=1, guidance_scale=0.0, size=512, one_step=True),  # model card
}
MULTI_STEP_PRESET = ModelPreset(steps=25, guidance_scale=7.5, size=None, one_step=False)  # diffusers' SD defaults

# Scheduler choices for multi-step models: name -> diffusers class name ("default" keeps the model's own).
SCHEDULERS: dict[str, str] = {
    "default": "",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++_2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@dataclass
class Progress:
    """One step of a long operation; `preview` is a PIL image or None."""

    step: int
    total: int
    preview: Image.Image | None = None
    score: float | None = None
    done: bool = False


@dataclass
class GenerationProgress(Progress):
    """A step of `iter_generate`: `step`/`total` count denoising steps over all batches; the fields below place it
    within the current diffusers call (a one-step model reports once per batch, after the batch)."""

    batch_step: int = 0  # denoising step within the current call, 1-based
    batch_steps: int = 0  # denoising steps of one call
    first_image: int = 0  # the call makes images first_image..last_image (1-based) of num_images
    last_image: int = 0
    num_images: int = 0


class _Stopped(Exception):
    """Raised from diffusers' step callback to end a call the caller stopped.

    Rather than diffusers' own `pipe._interrupt`: pipelines that honour it (SD, SDXL in 0.42) skip the remaining
    steps but still VAE-decode the unfinished latents, seconds on a CPU, for a batch that is dropped anyway."""


@dataclass
class Text2ImageOutput:
    """Generated images (sorted by CLIP score when reranked) with everything needed to reproduce or edit them."""

    images: list[Image.Image]
    seeds: list[int]
    scores: list[float] | None  # CLIPScore against the prompt; None without a scorer
    prompt: str
    negative_prompt: str | None
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    model: str
    clip_model: str | None
    latents: torch.Tensor  # (B, C, h, w) float32 CPU: the denoised latents, kept for `edit`
    noise: torch.Tensor  # (B, C, h, w) float32 CPU: the initial noise each image started from
    reranked: bool = False
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    done: bool = True

    def metadata(self, i: int) -> dict[str, Any]:
        """The settings of image `i` as written into its PNG (see `studio.media.save_png`)."""
        meta: dict[str, Any] = {
            "tool": "text2image", "prompt": self.prompt, "negative_prompt": self.negative_prompt or "",
            "seed": self.seeds[i], "steps": self.steps, "guidance_scale": self.guidance_scale,
            "width": self.width, "height": self.height, "scheduler": self.scheduler, "model": self.model,
        }
        if self.scores is not None:
            meta["clip_score"] = round(self.scores[i], 3)
            meta["clip_model"] = self.clip_model
        return meta

    def save(self, i: int, path: str | os.PathLike | None = None) -> Path:
        return save_png(self.images[i], path, self.metadata(i))


@dataclass
class RefineOutput:
    """ReNO result: the best image found, its noise and latent, and the score trajectory."""

    image: Image.Image
    start_image: Image.Image
    score_before: float
    score_after: float
    scores: list[float]  # CLIPScore at every iterate, the start included
    best_step: int
    prompt: str
    seed: int
    width: int
    height: int
    model: str
    clip_model: str | None
    noise: torch.Tensor  # (1, C, h, w) float32 CPU: the optimised noise of the best iterate
    latents: torch.Tensor  # (1, C, h, w) float32 CPU: its denoised latent, for `edit`
    frames: list[Image.Image] = field(default_factory=list)
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    done: bool = True

    def metadata(self) -> dict[str, Any]:
        return {
            "tool": "text2image", "prompt": self.prompt, "negative_prompt": "", "seed": self.seed, "steps": 1,
            "guidance_scale": 0.0, "width": self.width, "height": self.height, "scheduler": "default",
            "model": self.model, "refined": True, "refine_steps": len(self.scores) - 1,
            "clip_score_before": round(self.score_before, 3), "clip_score": round(self.score_after, 3),
            "clip_model": self.clip_model,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        return save_png(self.image, path, self.metadata())


@dataclass
class EditOutput:
    """Directional-CLIP edit: before/after images, the directional score and the target-text CLIPScore."""

    image: Image.Image
    original: Image.Image
    source_prompt: str
    edit_prompt: str
    strength: float
    directional: list[float]  # cos(delta image embedding, delta text embedding) after each update
    edit_score_before: float  # CLIPScore of the original against the edit text
    edit_score_after: float
    latents: torch.Tensor  # (1, C, h, w) float32 CPU: the edited latent (editable again)
    model: str
    clip_model: str | None
    frames: list[Image.Image] = field(default_factory=list)
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    done: bool = True

    def metadata(self) -> dict[str, Any]:
        return {
            "tool": "text2image-edit", "prompt": self.source_prompt, "edit_prompt": self.edit_prompt,
            "strength": self.strength, "edit_steps": len(self.directional), "model": self.model,
            "directional_score": round(self.directional[-1], 4) if self.directional else None,
            "clip_score_before": round(self.edit_score_before, 3), "clip_score": round(self.edit_score_after, 3),
            "clip_model": self.clip_model,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        return save_png(self.image, path, self.metadata())


def _looks_like_path(name: str) -> bool:
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained` without diffusers 0.42's own deprecation warning about `local_dir_use_symlinks` (it
    passes that argument to huggingface_hub on every cache lookup; the warning says nothing to our users)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        return cls.from_pretrained(name, **kwargs)


def resolve_pipeline(model: str | None = None, *, local_files_only: bool | None = None, **load_kwargs: Any):
    """Load a diffusers text-to-image pipeline: explicit folder -> Hugging Face cache -> download.

    `model` defaults to `STUDIO_T2I_MODEL`, then `DEFAULT_MODEL`. Downloads are skipped when `HF_HUB_OFFLINE` is set
    or `local_files_only=True`. Returns `(pipeline, name, where)`; raises `studio.hub.WeightsNotFoundError` naming the
    model, each place tried, and how to supply a local folder.
    """
    from diffusers import AutoPipelineForText2Image

    name = model or os.environ.get("STUDIO_T2I_MODEL") or DEFAULT_MODEL
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return _from_pretrained(AutoPipelineForText2Image, expanded, **load_kwargs), name, f"local folder {expanded}"
    how = (f"fetch the diffusers folder on a machine with internet (e.g. `huggingface-cli download "
           f"{DEFAULT_MODEL if _looks_like_path(name) else name} --local-dir ./model`), then pass that folder to "
           f"Text2ImagePipeline.from_pretrained(...) or set STUDIO_T2I_MODEL=/path/to/folder")
    if _looks_like_path(name):
        raise WeightsNotFoundError(name, [f"local folder {expanded}: does not exist (a diffusers folder holds "
                                          f"model_index.json, unet/, vae/, ...)"], how)
    tried = [f"local folder: no folder named {name!r}"]
    try:
        pipe = _from_pretrained(AutoPipelineForText2Image, name, local_files_only=True, **load_kwargs)
        return pipe, name, "Hugging Face cache"
    except Exception as err:  # diffusers raises OSError/EnvironmentError/ValueError depending on what is missing
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        tried.append(f"Hugging Face cache ({cache}): {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    is_offline = local_files_only if local_files_only is not None else offline()
    if is_offline:
        tried.append("download: skipped (HF_HUB_OFFLINE is set)" if local_files_only is None
                     else "download: skipped (local_files_only=True)")
    elif not hub_reachable():  # without this check huggingface_hub retries for most of a minute
        tried.append("download: the Hugging Face Hub cannot be reached (no network?)")
    else:
        try:
            pipe = _from_pretrained(AutoPipelineForText2Image, name, **load_kwargs)
            return pipe, name, "downloaded from the Hugging Face Hub"
        except Exception as err:
            tried.append(f"download: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    raise WeightsNotFoundError(name, tried, how)


def _dtype_kwarg() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (0.42 warns on the old name); older releases know only the old one.
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (exists where `dtype` does)
    except ImportError:
        return "torch_dtype"
    return "dtype"


_DTYPE_KWARG = _dtype_kwarg()


def preset_for(name: str) -> ModelPreset | None:
    if name in PRESETS:
        return PRESETS[name]
    base = Path(name.rstrip("/\\")).name.lower()
    for key, preset in PRESETS.items():
        if key.split("/")[-1] == base:
            return preset
    return None


def chi_norm_nll(norm: torch.Tensor, d: int) -> torch.Tensor:
    """Negative log-likelihood (up to a constant) of a norm r = ||eps|| of d-dimensional standard normal noise.

    r follows a chi distribution with d degrees of freedom, p(r) ~ r^(d-1) exp(-r^2 / 2), so
    -log p(r) = r^2 / 2 - (d - 1) log r, smallest at r = sqrt(d - 1): ReNO's regulariser (Eyring et al. 2024, eq. 4).
    """
    return 0.5 * norm**2 - (d - 1) * torch.log(norm)


def _pt_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) floats in [0, 1] -> PIL images."""
    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


class Text2ImagePipeline:
    """Generate with diffusers; rerank, refine (ReNO) and edit (directional CLIP) with the shared CLIP scorer.

    Build from components, `Text2ImagePipeline(pipe, scorer=...)`, or with `from_pretrained(...)`.
    """

    def __init__(
        self,
        pipe: Any,
        scorer: Any | None = None,
        *,
        model_name: str = "custom",
        preset: ModelPreset | None = None,
        max_side: int = MAX_SIDE,
        max_batch: int = MAX_BATCH,
        max_images: int = MAX_IMAGES,
    ):
        for attr in ("unet", "vae", "scheduler"):
            if getattr(pipe, attr, None) is None:
                raise ValueError(f"`pipe` must be a UNet-based diffusers pipeline with `{attr}`, got "
                                 f"{type(pipe).__name__}")
        self.pipe = pipe
        self.scorer = scorer
        self.model_name = model_name
        self.preset = preset or preset_for(model_name) or MULTI_STEP_PRESET
        self.max_side, self.max_batch, self.max_images = max_side, max_batch, max_images
        self._base_scheduler = pipe.scheduler
        self._lock = threading.RLock()  # Gradio runs handlers in threads; the pipeline's scheduler is shared state
        self._refresh_placement()
        for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False)  # refine/edit differentiate w.r.t. latents only
                module.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | None = None,
        scorer: Any | None = None,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        offload: bool | str = "auto",
        local_files_only: bool | None = None,
        one_step: bool | None = None,
        **load_kwargs: Any,
    ) -> "Text2ImagePipeline":
        """Resolve and load a model (see `resolve_pipeline`), pick fp16/bf16 on GPUs, offload on small GPUs.

        `offload="auto"` enables accelerate's `enable_model_cpu_offload` when the GPU has under 6 GiB;
        `one_step` overrides whether the model is treated as one-step (needed by `refine` for unknown models).
        """
        if offload not in (True, False, "auto"):
            raise ValueError(f"`offload` must be True, False or 'auto', got {offload!r}")
        dev = pick_device(device)
        if offload is True and dev.type == "cpu":
            raise ValueError(f"`offload`=True moves weights to the GPU only while in use; it needs a GPU device, "
                             f"got device {str(dev)!r}")
        dtype = pick_dtype(dev, precision)
        load_kwargs.setdefault(_DTYPE_KWARG, dtype)
        pipe, name, where = resolve_pipeline(model_id_or_folder, local_files_only=local_files_only, **load_kwargs)
        if getattr(pipe, "safety_checker", None) is None and "requires_safety_checker" in pipe.config:
            pipe.register_to_config(requires_safety_checker=False)
        use_offload = offload is True or (
            offload == "auto" and dev.type == "cuda"
            and torch.cuda.get_device_properties(dev).total_memory < LOW_VRAM_BYTES)
        if use_offload:
            pipe.enable_model_cpu_offload(device=dev)
        else:
            pipe.to(dev)
        pipe.set_progress_bar_config(disable=True)
        preset = preset_for(name)
        if one_step is not None:
            base = preset or MULTI_STEP_PRESET
            preset = ModelPreset(steps=1 if one_step else base.steps, guidance_scale=0.0 if one_step else
                                 base.guidance_scale, size=base.size, one_step=one_step)
        self = cls(pipe, scorer, model_name=name, preset=preset)
        self.source = where
        return self

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def _refresh_placement(self) -> None:
        # Cached: diffusers finds the execution device by walking every module, ~1 ms a call (2% of a GPU step).
        self._device = self.pipe._execution_device
        self._dtype = self.pipe.unet.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Text2ImagePipeline":
        """Move the diffusers pipeline (use this rather than `pipe.to`, so the cached placement follows)."""
        self.pipe.to(device=device, dtype=dtype)
        self._refresh_placement()
        return self

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)))

    @property
    def default_size(self) -> int:
        return self.preset.size or int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    def defaults(self) -> dict[str, Any]:
        """Plain values for the UI: default controls, limits and choices."""
        return {
            "model": self.model_name, "steps": self.preset.steps, "guidance_scale": self.preset.guidance_scale,
            "width": self.default_size, "height": self.default_size, "one_step": self.preset.one_step,
            "schedulers": list(SCHEDULERS), "max_side": self.max_side, "max_batch": self.max_batch,
            "max_images": self.max_images, "max_steps": MAX_STEPS, "max_guidance": MAX_GUIDANCE,
            "clip_model": self._clip_name(),
        }

    def _clip_name(self) -> str | None:
        if self.scorer is None:
            return None
        return str(getattr(self.scorer, "spec", None) or type(self.scorer).__name__)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, prompt: Any, negative_prompt: Any, steps: Any, guidance_scale: Any, width: Any,
                     height: Any, num_images: Any, batch_size: Any, seed: Any, scheduler: Any) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"`prompt` must be a non-empty string, got {prompt!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"`negative_prompt` must be a string or None, got {negative_prompt!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"`steps` must be an integer in [1, {MAX_STEPS}], got {steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not 0.0 <= guidance_scale <= MAX_GUIDANCE:
            raise ValueError(f"`guidance_scale` must be in [0, {MAX_GUIDANCE}], got {guidance_scale!r}")
        if negative_prompt and guidance_scale <= 1.0:
            raise ValueError(f"`negative_prompt` has no effect unless `guidance_scale` > 1 (classifier-free "
                             f"guidance), got guidance_scale={guidance_scale} with negative_prompt={negative_prompt!r}")
        for arg, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or isinstance(value, bool) or value % 8 or not 16 <= value <= self.max_side:
                raise ValueError(f"`{arg}` must be a multiple of 8 in [16, {self.max_side}], got {value!r}")
        if not isinstance(num_images, int) or not 1 <= num_images <= self.max_images:
            raise ValueError(f"`num_images` must be an integer in [1, {self.max_images}], got {num_images!r}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= self.max_batch:
            raise ValueError(f"`batch_size` must be an integer in [1, {self.max_batch}], got {batch_size!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32):
            raise ValueError(f"`seed` must be an integer in [0, 2**32) or None, got {seed!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"`scheduler` must be one of {list(SCHEDULERS)}, got {scheduler!r}")

    # ------------------------------------------------------------------ helpers
    def _noise(self, seeds: list[int], height: int, width: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        """(B, C, h, w) float32 CPU noise from one CPU generator per image, and those generators, which go on to
        supply any noise the scheduler adds (ancestral samplers), so image i depends on seeds[i] only."""
        shape = (self.pipe.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return torch.stack([torch.randn(shape, generator=g) for g in generators]), generators

    def _set_scheduler(self, name: str) -> None:
        if name == "default":
            self.pipe.scheduler = self._base_scheduler
        else:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[name])
            self.pipe.scheduler = cls.from_config(self._base_scheduler.config)

    def _set_tiling(self, height: int, width: int) -> None:
        vae = self.pipe.vae
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if height * width > VAE_TILING_PIXELS else vae.disable_tiling()

    def _score(self, images: torch.Tensor, text: str) -> list[float]:
        """CLIPScore of (B, 3, H, W) images in [0, 1] against `text`."""
        scores = self.scorer.score(images.to(self.scorer.device), [text])  # (B, 1)
        return [float(s) for s in scores[:, 0]]

    def _require_scorer(self, what: str) -> None:
        if self.scorer is None:
            raise ValueError(f"{what} needs a CLIP scorer; build the pipeline with `scorer=get_scorer(...)`")

    def _require_differentiable(self, what: str) -> None:
        if getattr(self.pipe, "text_encoder_2", None) is not None or getattr(self.pipe, "text_encoder", None) is None:
            raise ValueError(f"{what} supports Stable Diffusion 1.x/2.x-style pipelines (one CLIP text encoder, "
                             f"e.g. SD-Turbo), got {type(self.pipe).__name__}")

    def _embed_prompt(self, prompt: str) -> torch.Tensor:
        embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
        return embeds  # (1, 77, D)

    def _one_step_x0(self, noise: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Denoised latent of a one-step sample: the x0-prediction at the first timestep of a 1-step schedule.

        With unit-variance `noise` as x_t, x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (epsilon models) or
        sqrt(a_t) x_t - sqrt(1 - a_t) v (v models). This equals what diffusers' 1-step sampling returns (e.g. Euler:
        sample = noise * sqrt(sigma^2 + 1), x0 = sample - sigma * eps), so refine starts from the generated image.
        """
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(1, device=noise.device)
        t = scheduler.timesteps[0]
        a = scheduler.alphas_cumprod[int(t)].to(noise.device, torch.float32)
        out = self.pipe.unet(noise.to(embeds.dtype), t, encoder_hidden_states=embeds).sample.float()
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            return (noise - (1 - a).sqrt() * out) / a.sqrt()
        if kind == "v_prediction":
            return a.sqrt() * noise - (1 - a).sqrt() * out
        if kind == "sample":
            return out
        raise ValueError(f"scheduler prediction_type {kind!r} is not supported by refine")

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, 3, H, W) images in [0, 1], differentiable."""
        vae = self.pipe.vae
        z = latents / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        image = vae.decode(z.to(vae.dtype)).sample.float()
        return (image / 2 + 0.5).clamp(0, 1)

    def _set_checkpointing(self, modules: list[Any], on: bool | None) -> None:
        """Gradient checkpointing for refine/edit: None means on a GPU only (it trades compute for activation
        memory, which a CPU with ample RAM does not need; on CPU it slows small models several-fold)."""
        on = self.device.type != "cpu" if on is None else on
        for m in modules:
            if getattr(m, "_supports_gradient_checkpointing", False) and m.is_gradient_checkpointing != on:
                m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()

    def _denoise(self, call: dict[str, Any], scheduler: str, what: str,
                 on_step: Callable[[int, int], None] | None = None) -> tuple[Any, torch.Tensor, float]:
        """One diffusers call under the lock: (output, final latents (b, C, h, w), seconds it took).

        `on_step(step, steps)` runs after each denoising step (1-based); raising `_Stopped` there ends the call."""
        final: dict[str, torch.Tensor] = {}

        def step_end(pipe, i, t, kw):
            final["latents"] = kw["latents"]
            if on_step is not None:
                on_step(i + 1, pipe.num_timesteps)
            return kw

        with self._lock, oom_guard(what):
            t0 = time.perf_counter()
            self._set_scheduler(scheduler)
            self._set_tiling(call["height"], call["width"])
            try:
                out = self.pipe(**call, callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=["latents"])
            except _Stopped:
                if hasattr(self.pipe, "maybe_free_model_hooks"):
                    self.pipe.maybe_free_model_hooks()  # what a finished call does last (resets CPU offload)
                raise
        return out, final["latents"], time.perf_counter() - t0

    def _denoise_stepwise(
        self, call: dict[str, Any], scheduler: str, what: str, progress: Callable[[int, int], Progress]
    ) -> Generator[Progress, str | None, tuple[tuple[Any, torch.Tensor, float] | None, bool]]:
        """`_denoise` in a worker thread, yielding `progress(step, steps)` after each denoising step.

        Returns (what `_denoise` returns, or None if the call was cut short; whether "stop" was sent). Sending
        "stop" or closing the generator ends the call at the worker's next step and waits for the worker; an error
        in the worker is raised here (after a "stop" too; not on closing, which must not fail).
        """
        # The worker runs at most one step ahead of the caller, so at most two steps follow the last one it saw.
        events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def on_step(step: int, steps: int) -> None:
            events.put(("step", (step, steps)))
            if stop.is_set():
                raise _Stopped

        def work() -> None:
            try:
                if stop.is_set():
                    raise _Stopped
                events.put(("done", self._denoise(call, scheduler, what, on_step)))
            except _Stopped:
                events.put(("stopped", None))
            except BaseException as err:  # noqa: BLE001 — handed to the caller, which raises it
                events.put(("error", err))

        worker = threading.Thread(target=work, name="text2image-denoise", daemon=True)
        worker.start()
        kind, payload = events.get()
        stopped = False
        try:
            while kind == "step":
                if (yield progress(*payload)) == "stop":
                    stopped = True
                    break
                kind, payload = events.get()
        finally:
            if kind == "step":  # stopped or closed mid-call: end the worker; it always ends with one more event
                stop.set()
                while kind == "step":
                    kind, payload = events.get()
            worker.join()
        if kind == "error":
            raise payload
        return payload, stopped

    # ------------------------------------------------------------------ generation (+ rerank)
    def __call__(self, prompt: str, *, callback: Callable | None = None, **kwargs: Any) -> Text2ImageOutput:
        """Generate `num_images` images (see `iter_generate` for the arguments)."""
        return drain(self.iter_generate(prompt, **kwargs), callback)

    generate = __call__

    def rerank(self, prompt: str, num_candidates: int = 4, *, callback: Callable | None = None,
               **kwargs: Any) -> Text2ImageOutput:
        """Generate `num_candidates` images and return them sorted by CLIPScore against the prompt."""
        return drain(self.iter_generate(prompt, num_images=num_candidates, rerank=True, **kwargs), callback)

    def iter_generate(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        num_images: int = 1,
        batch_size: int | None = None,
        seed: int | None = None,
        scheduler: str = "default",
        rerank: bool = False,
    ) -> Iterator[Progress | Text2ImageOutput]:
        """Yield a `GenerationProgress` after each denoising step (one-step models: after each batch), then the
        `Text2ImageOutput`. Stopping mid-batch (sending "stop", or closing the generator) ends the diffusers call at
        its next step and drops that batch: the result holds the finished batches only, with `stopped=True`.

        Image i uses seed `seed + i` (a random base seed when None), so each image is reproducible on its own with
        `num_images=1, seed=seed + i`. Scores are computed whenever a scorer is present; `rerank` sorts by them.
        """
        # 1. check inputs
        steps = self.preset.steps if steps is None else steps
        guidance_scale = self.preset.guidance_scale if guidance_scale is None else guidance_scale
        width = self.default_size if width is None else width
        height = self.default_size if height is None else height
        batch_size = min(num_images, self.max_batch) if batch_size is None else batch_size
        self.check_inputs(prompt, negative_prompt, steps, guidance_scale, width, height, num_images, batch_size,
                          seed, scheduler)
        if rerank:
            self._require_scorer("rerank")
        base = random.randrange(2**32 - MAX_IMAGES) if seed is None else seed
        seeds = [(base + i) % 2**32 for i in range(num_images)]
        noise, generators = self._noise(seeds, height, width)  # (N, C, h, w)

        # 2. generate in batches; a multi-step call runs in a worker thread so that each step reaches the caller
        images: list[Image.Image] = []
        latents, scores = [], []
        device, dtype = self.device, self.dtype
        timings = {"generate_s": 0.0, "score_s": 0.0}
        stopped = False
        num_batches = math.ceil(num_images / batch_size)
        for batch, start in enumerate(range(0, num_images, batch_size)):
            chunk = noise[start:start + batch_size]
            call = dict(
                prompt=[prompt] * len(chunk),
                negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
                num_inference_steps=steps, guidance_scale=guidance_scale, width=width, height=height,
                latents=chunk.to(device, dtype), generator=generators[start:start + batch_size], output_type="pt",
            )
            what = f"generation of {len(chunk)} image(s) at {width}x{height}"

            def progress(step: int, batch_steps: int, _batch=batch, _start=start, _n=len(chunk)) -> Progress:
                return GenerationProgress(
                    step=_batch * batch_steps + step, total=num_batches * batch_steps,
                    preview=images[-1] if images else None, batch_step=step, batch_steps=batch_steps,
                    first_image=_start + 1, last_image=_start + _n, num_images=num_images)

            if steps == 1:  # nothing to report within the call: no thread
                done = self._denoise(call, scheduler, what)
            else:
                done, stopped = yield from self._denoise_stepwise(call, scheduler, what, progress)
                if done is None:  # stopped mid-call: this batch is dropped
                    break
            out, final, seconds = done
            timings["generate_s"] += seconds
            if self.scorer is not None:  # scored on the device, before the copy to the CPU
                t0 = time.perf_counter()
                with self._lock, oom_guard("CLIP scoring"):
                    scores.extend(self._score(out.images, prompt))
                timings["score_s"] += time.perf_counter() - t0
            images.extend(_pt_to_pil(out.images))  # (b, 3, H, W) in [0, 1] -> PIL
            latents.append(final.float().cpu())
            if steps == 1:
                stopped = (yield progress(1, 1)) == "stop"
            if stopped:
                break

        # 3. rerank
        n = len(images)
        order = list(range(n))
        if rerank and self.scorer is not None:
            order = sorted(order, key=lambda i: -scores[i])

        # 4. package the result
        yield Text2ImageOutput(
            images=[images[i] for i in order], seeds=[seeds[i] for i in order],
            scores=[scores[i] for i in order] if self.scorer is not None else None, prompt=prompt,
            negative_prompt=negative_prompt or None, steps=steps, guidance_scale=float(guidance_scale), width=width,
            height=height, scheduler=scheduler, model=self.model_name, clip_model=self._clip_name(),
            latents=torch.cat(latents)[order] if latents else noise[:0], noise=noise[:n][order], reranked=rerank,
            stopped=stopped, timings=timings,
        )

    # ------------------------------------------------------------------ refine (ReNO)
    def refine(self, prompt: str, *, callback: Callable | None = None, **kwargs: Any) -> RefineOutput:
        """Optimise the initial noise of a one-step sample for CLIPScore (see `iter_refine`)."""
        return drain(self.iter_refine(prompt, **kwargs), callback)

    def iter_refine(
        self,
        prompt: str,
        *,
        seed: int,
        width: int | None = None,
        height: int | None = None,
        steps: int = 20,
        lr: float = 5.0,  # ReNO arguments.py
        reg_weight: float = 0.01,  # ReNO arguments.py
        grad_clip: float = 0.1,  # ReNO arguments.py
        momentum: float = 0.9,  # ReNO training/optim.py (SGD, Nesterov)
        preview_every: int = 1,
        gradient_checkpointing: bool | None = None,  # None: on GPUs only
    ) -> Iterator[Progress | RefineOutput]:
        """ReNO on one image: start from the noise `seed` gives, take `steps` SGD steps on
        loss = (100 - 100 cos(E_I(G(eps)), E_T(prompt))) / 100 + reg_weight * (||eps||^2 / 2 - (d - 1) log ||eps||),
        the second term being the chi-distribution negative log-likelihood of the noise norm (ReNO, sec. 3).
        The CLIP term is ReNO's CLIP loss with its weight 0.01. The best iterate by CLIPScore is returned.
        """
        # 1. check inputs
        width = self.default_size if width is None else width
        height = self.default_size if height is None else height
        self.check_inputs(prompt, None, 1, 0.0, width, height, 1, 1, seed, "default")
        if seed is None:
            raise ValueError("`seed` must be an integer in [0, 2**32) for refine, got None")
        if not isinstance(steps, int) or not 1 <= steps <= 200:
            raise ValueError(f"`steps` must be an integer in [1, 200], got {steps!r}")
        for arg, value in (("lr", lr), ("grad_clip", grad_clip)):
            if not value > 0:
                raise ValueError(f"`{arg}` must be > 0, got {value!r}")
        if not reg_weight >= 0:
            raise ValueError(f"`reg_weight` must be >= 0, got {reg_weight!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}")
        if not isinstance(preview_every, int) or preview_every < 1:
            raise ValueError(f"`preview_every` must be a positive integer, got {preview_every!r}")
        if not self.preset.one_step:
            raise ValueError(f"refine needs a one-step model (e.g. {DEFAULT_MODEL}); {self.model_name!r} is set up "
                             f"for {self.preset.steps} steps (pass one_step=True to from_pretrained to override)")
        self._require_scorer("refine")
        self._require_differentiable("refine")

        # 2. initialise the noise and the prompt embeddings
        timings: dict[str, float] = {}
        with self._lock:
            self._set_scheduler("default")
            self._set_tiling(height, width)
            self._set_checkpointing([self.pipe.unet, self.pipe.vae], gradient_checkpointing)
            noise = self._noise([seed], height, width)[0].to(self.device).requires_grad_(True)  # (1, C, h, w) fp32
            d = noise[0].numel()
            with torch.no_grad():
                embeds = self._embed_prompt(prompt)
                text = self.scorer.encode_text([prompt]).to(self.scorer.device)  # (1, D)
        optimizer = torch.optim.SGD([noise], lr=lr, momentum=momentum, nesterov=momentum > 0)

        # 3. optimise: evaluate every iterate, keep the best, step on all but the last
        scores: list[float] = []
        frames: list[Image.Image] = []
        best = (-math.inf, 0, None, None, None)  # score, step, image, noise, latent
        start_image = None
        stopped = False
        t0 = time.perf_counter()
        for step in range(steps + 1):
            with self._lock, oom_guard(f"refinement at {width}x{height}"), torch.enable_grad():
                x0 = self._one_step_x0(noise, embeds)
                image = self._decode(x0)  # (1, 3, H, W)
                cos = (self.scorer.encode_image(image.to(self.scorer.device)) * text).sum(-1)  # (1,)
                score = float(100.0 * cos.clamp(min=0).item())
                if step < steps:
                    norm = noise.flatten().norm()
                    reward_loss = (100.0 - 100.0 * cos).mean() * 0.01
                    reg = reg_weight * chi_norm_nll(norm, d)
                    (grad,) = torch.autograd.grad(reward_loss + reg, [noise])
                    noise.grad = grad
                    torch.nn.utils.clip_grad_norm_([noise], grad_clip)
            scores.append(score)
            pil = _pt_to_pil(image.detach())[0]
            if step == 0:
                start_image = pil
            if score > best[0]:
                best = (score, step, pil, noise.detach().float().cpu().clone(), x0.detach().float().cpu())
            if step < steps:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if step % preview_every == 0 or step == steps:
                frames.append(pil)
                cmd = yield Progress(step=step, total=steps, preview=pil, score=score)
                if cmd == "stop":
                    stopped = True
                    break
        timings["refine_s"] = time.perf_counter() - t0

        # 4. package the result
        yield RefineOutput(
            image=best[2], start_image=start_image, score_before=scores[0], score_after=best[0], scores=scores,
            best_step=best[1], prompt=prompt, seed=seed, width=width, height=height, model=self.model_name,
            clip_model=self._clip_name(), noise=best[3], latents=best[4], frames=frames, stopped=stopped,
            timings=timings,
        )

    # ------------------------------------------------------------------ edit (directional CLIP)
    def edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str, *, callback: Callable | None = None,
             **kwargs: Any) -> EditOutput:
        """Move a kept latent toward `edit_prompt` (see `iter_edit`)."""
        return drain(self.iter_edit(latents, source_prompt, edit_prompt, **kwargs), callback)

    def iter_edit(
        self,
        latents: torch.Tensor,
        source_prompt: str,
        edit_prompt: str,
        *,
        strength: float = 0.5,
        steps: int = 20,
        lr: float = 0.05,  # Adam on SD latents (unit scale); StyleCLIP's latent optimisation uses Adam 0.1 on w
        proximity: float = 1.0,
        preview_every: int = 1,
        gradient_checkpointing: bool | None = None,  # None: on GPUs only
    ) -> Iterator[Progress | EditOutput]:
        """Optimise z from z0 (a generated image's denoised latent) with Adam on
        loss = 1 - cos(E_I(D(z)) - E_I(D(z0)), E_T(edit) - E_T(source)) + proximity * (1 - s) / s * mean((z - z0)^2),
        the directional loss of StyleGAN-NADA (Gal et al. 2022, eq. 3) plus a pull toward the original whose weight
        falls as `strength` s in (0, 1] rises (s = 1: no pull).
        """
        # 1. check inputs
        if not isinstance(latents, torch.Tensor) or latents.ndim not in (3, 4) or (
                latents.ndim == 4 and latents.shape[0] != 1):
            raise ValueError(f"`latents` must be a (C, h, w) or (1, C, h, w) tensor, got "
                             f"{getattr(latents, 'shape', type(latents).__name__)}")
        if latents.shape[-3] != self.pipe.unet.config.in_channels:
            raise ValueError(f"`latents` must have {self.pipe.unet.config.in_channels} channels, got "
                             f"{latents.shape[-3]}")
        for arg, value in (("source_prompt", source_prompt), ("edit_prompt", edit_prompt)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"`{arg}` must be a non-empty string, got {value!r}")
        if source_prompt.strip() == edit_prompt.strip():
            raise ValueError(f"`edit_prompt` must differ from `source_prompt`, got {edit_prompt!r} for both")
        if not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` must be in (0, 1], got {strength!r}")
        if not isinstance(steps, int) or not 1 <= steps <= 200:
            raise ValueError(f"`steps` must be an integer in [1, 200], got {steps!r}")
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}")
        if not proximity >= 0:
            raise ValueError(f"`proximity` must be >= 0, got {proximity!r}")
        if not isinstance(preview_every, int) or preview_every < 1:
            raise ValueError(f"`preview_every` must be a positive integer, got {preview_every!r}")
        self._require_scorer("edit")
        self._require_differentiable("edit")  # SDXL's VAE overflows in fp16 unless upcast, which _decode does not do

        # 2. embed the texts and the original image
        z0 = latents.reshape(1, *latents.shape[-3:]).to(self.device, torch.float32)
        h, w = (s * self.vae_scale_factor for s in z0.shape[-2:])
        weight = proximity * (1.0 - strength) / strength
        with self._lock, torch.no_grad(), oom_guard("encoding of the image to edit"):
            self._set_tiling(h, w)
            self._set_checkpointing([self.pipe.vae], gradient_checkpointing)
            t = self.scorer.encode_text([source_prompt, edit_prompt]).to(self.scorer.device)  # (2, D)
            text_dir = F.normalize(t[1] - t[0], dim=-1)  # (D,)
            original = self._decode(z0)
            e0 = self.scorer.encode_image(original.to(self.scorer.device))  # (1, D)
            before = float(100.0 * (e0 @ t[1]).clamp(min=0).item())
        z = z0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)

        # 3. optimise: every pass scores the current iterate, then (but for the last) steps
        directional: list[float] = []  # one value per update, for iterates 1..steps
        frames: list[Image.Image] = []
        stopped = False
        t0 = time.perf_counter()
        for step in range(steps + 1):
            with self._lock, oom_guard(f"editing at {w}x{h}"), torch.enable_grad():
                image = self._decode(z)  # (1, 3, H, W)
                e = self.scorer.encode_image(image.to(self.scorer.device))  # (1, D)
                cos_dir = F.cosine_similarity(e - e0, text_dir[None], dim=-1, eps=1e-8).mean()
                if step < steps:
                    loss = 1.0 - cos_dir + weight * (z - z0).pow(2).mean()
                    (z.grad,) = torch.autograd.grad(loss, [z])
            if step > 0:
                directional.append(float(cos_dir.item()))
            z_eval = z.detach().clone()  # the iterate `image` shows; z moves on below
            if step < steps:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if step > 0 and (step % preview_every == 0 or step == steps):
                pil = _pt_to_pil(image.detach())[0]
                frames.append(pil)
                cmd = yield Progress(step=step, total=steps, preview=pil, score=directional[-1])
                if cmd == "stop":
                    stopped = True
                    break
        timings = {"edit_s": time.perf_counter() - t0}

        # 4. package the result (the last evaluated iterate)
        final = image.detach()
        after = float(100.0 * (e.detach() @ t[1]).clamp(min=0).item())
        yield EditOutput(
            image=_pt_to_pil(final)[0], original=_pt_to_pil(original)[0], source_prompt=source_prompt,
            edit_prompt=edit_prompt, strength=float(strength), directional=directional, edit_score_before=before,
            edit_score_after=after, latents=z_eval.float().cpu(), model=self.model_name,
            clip_model=self._clip_name(), frames=frames, stopped=stopped, timings=timings,
        )
