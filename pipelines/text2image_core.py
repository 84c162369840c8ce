"""The Text to Image session: one diffusers model and the CLIP scorer, shared by every Text to Image task.

A session knows no task. It holds the diffusers components (a UNet-based pipeline: Stable Diffusion 1.x/2.x,
SD-Turbo, SDXL, ...), the shared CLIP scorer, the model's preset and the one lock over them, and offers what the
tasks build on: seeded noise, the scheduler and memory settings, prompt embeddings, VAE encode/decode, CLIP
scoring, and a diffusers call that reports every denoising step. The tasks sit on top, one per file (diffusers'
shape: separate pipelines over shared components): generate + rerank (`pipelines/text2image.py`), refine
(`text2image_refine.py`), edit (`text2image_edit.py`). Each is built from a session, from a diffusers pipeline
(which makes one), with `from_pretrained(...)`, or with `from_pipe(other_task)` (the other task's session: no
second copy of the weights).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generator

import torch

from pipelines.text2image_models import (
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    dtype_kwarg,
    preset_for,
    resolve_pipeline,
)
from studio.device import pick_device, pick_dtype
from studio.progress import Progress, Stopped, iterate_callback
from studio.scorer import get_scorer, oom_guard

LOW_VRAM_BYTES = 6 * 1024**3  # below this, weights stay on the CPU between uses (SD-Turbo fp16 needs ~3.5 GB resident)
VAE_TILING_PIXELS = 768 * 768  # above this the VAE decodes in tiles (its activations dominate memory at 1024^2)


class Text2ImageSession:
    """A loaded diffusers model and the CLIP scorer, with the operations the Text to Image tasks share.

    Build from a diffusers pipeline, `Text2ImageSession(pipe, scorer=..., model_name=..., preset=...)` (the preset:
    what the model is trained for; found from `model_name` for known models), or with `from_pretrained(...)`.
    `lock` guards the components (Gradio runs handlers in threads; the scheduler and the memory settings are
    shared state): every method that runs a model takes it, and a task holds it around its own model calls.
    """

    def __init__(self, pipe: Any, scorer: Any | None = None, *, model_name: str = "custom",
                 preset: ModelPreset | None = None):
        for attr in ("unet", "vae", "scheduler"):
            if getattr(pipe, attr, None) is None:
                raise ValueError(f"`pipe` must be a UNet-based diffusers pipeline with `{attr}`, got "
                                 f"{type(pipe).__name__}")
        self.pipe = pipe
        self.scorer = scorer
        self.model_name = model_name
        self.preset = preset or preset_for(model_name) or MULTI_STEP_PRESET
        self.source: str | None = None  # where from_pretrained found the weights
        self.base_scheduler = pipe.scheduler  # the model's own; `set_scheduler("default")` restores it
        self.lock = threading.RLock()
        self.refresh_placement()
        for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False)  # refine/edit differentiate w.r.t. latents only
                module.eval()

    @classmethod
    def of(cls, pipe: Any, scorer: Any | None = None, *, model_name: str = "custom",
           preset: ModelPreset | None = None) -> "Text2ImageSession":
        """`pipe` itself when it is a session (a task built on it), else a new session over the diffusers `pipe`."""
        if isinstance(pipe, cls):
            return pipe
        return cls(pipe, scorer, model_name=model_name, preset=preset)

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
    ) -> "Text2ImageSession":
        """Resolve and load a model (see `resolve_pipeline`), pick fp16/bf16 on GPUs, offload on small GPUs.

        `offload="auto"` enables accelerate's `enable_model_cpu_offload` when the GPU has under 6 GiB;
        `one_step` overrides whether the model is treated as one-step (needed by refine for unknown models).
        """
        if offload not in (True, False, "auto"):
            raise ValueError(f"`offload` must be True, False or 'auto', got {offload!r}")
        dev = pick_device(device)
        if offload is True and dev.type == "cpu":
            raise ValueError(f"`offload`=True moves weights to the GPU only while in use; it needs a GPU device, "
                             f"got device {str(dev)!r}")
        dtype = pick_dtype(dev, precision)
        load_kwargs.setdefault(dtype_kwarg(), dtype)
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
            preset = ModelPreset(num_steps=1 if one_step else base.num_steps,
                                 guidance_scale=0.0 if one_step else base.guidance_scale, size=base.size,
                                 one_step=one_step)
        self = cls(pipe, scorer, model_name=name, preset=preset)
        self.source = where
        return self

    # ------------------------------------------------------------------ placement and sizes
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def refresh_placement(self) -> None:
        """Re-read the device and dtype (after moving the diffusers pipeline yourself; `to` does it)."""
        # Cached: diffusers finds the execution device by walking every module, ~1 ms a call (2% of a GPU step).
        self._device = self.pipe._execution_device
        self._dtype = self.pipe.unet.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Text2ImageSession":
        """Move the diffusers pipeline (use this rather than `pipe.to`, so the cached placement follows)."""
        self.pipe.to(device=device, dtype=dtype)
        self.refresh_placement()
        return self

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)))

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def default_size(self) -> int:
        """The image side the model is made for: its preset's, else the UNet's sample size times the VAE factor."""
        return self.preset.size or int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    @property
    def clip_name(self) -> str | None:
        """What results record as their CLIP model (None without a scorer)."""
        if self.scorer is None:
            return None
        return str(getattr(self.scorer, "spec", None) or type(self.scorer).__name__)

    # ------------------------------------------------------------------ checks
    def require_scorer(self, what: str) -> None:
        if self.scorer is None:
            raise ValueError(f"{what} needs a CLIP scorer; build the pipeline with `scorer=get_scorer(...)`")

    def require_differentiable(self, what: str) -> None:
        """Refuse models whose prompt embedding and decoder the gradient tasks do not support (SDXL's two text
        encoders; SDXL's VAE overflows in fp16 unless upcast, which `decode` does not do)."""
        if getattr(self.pipe, "text_encoder_2", None) is not None or getattr(self.pipe, "text_encoder", None) is None:
            raise ValueError(f"{what} supports Stable Diffusion 1.x/2.x-style pipelines (one CLIP text encoder, "
                             f"e.g. SD-Turbo), got {type(self.pipe).__name__}")

    # ------------------------------------------------------------------ building blocks (callers hold `lock`)
    def noise(self, seeds: list[int], height: int, width: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        """(B, C, h, w) float32 CPU noise from one CPU generator per image, and those generators, which go on to
        supply any noise the scheduler adds (ancestral samplers), so image i depends on seeds[i] only."""
        shape = (self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return torch.stack([torch.randn(shape, generator=g) for g in generators]), generators

    def set_scheduler(self, name: str, pipe: Any | None = None) -> None:
        """Give `pipe` (default: the session's diffusers pipeline) the scheduler called `name` (see `SCHEDULERS`;
        "default": the model's own), configured from the model's."""
        pipe = pipe or self.pipe
        if name == "default":
            pipe.scheduler = self.base_scheduler
        else:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[name])
            pipe.scheduler = cls.from_config(self.base_scheduler.config)

    def set_tiling(self, height: int, width: int) -> None:
        """VAE tiling on above `VAE_TILING_PIXELS`, off below (its activations dominate memory at 1024²)."""
        vae = self.pipe.vae
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if height * width > VAE_TILING_PIXELS else vae.disable_tiling()

    def set_checkpointing(self, modules: list[Any], mode: str) -> None:
        """Gradient checkpointing for the gradient tasks: "on", "off", or "auto" (on a GPU only: it trades compute
        for activation memory, which a CPU with ample RAM does not need; on CPU it slows small models several-fold)."""
        on = self.device.type != "cpu" if mode == "auto" else mode == "on"
        for m in modules:
            if getattr(m, "_supports_gradient_checkpointing", False) and m.is_gradient_checkpointing != on:
                m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()

    def score(self, images: torch.Tensor, text: str) -> list[float]:
        """CLIPScore of (B, 3, H, W) images in [0, 1] against `text`."""
        scores = self.scorer.score(images.to(self.scorer.device), [text])  # (B, 1)
        return [float(s) for s in scores[:, 0]]

    def embed_prompt(self, prompt: str) -> torch.Tensor:
        """(1, 77, D) text-encoder states of `prompt` (one-encoder models; see `require_differentiable`)."""
        embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
        return embeds

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, 3, H, W) images in [0, 1], differentiable."""
        vae = self.pipe.vae
        z = latents / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        image = vae.decode(z.to(vae.dtype)).sample.float()
        return (image / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ one diffusers call, step by step
    def denoise(self, call: dict[str, Any], scheduler: str, what: str, on_step: Callable[[int], None] | None = None,
                pipe: Any | None = None) -> tuple[Any, torch.Tensor, float]:
        """One diffusers call under the lock: (output, final latents (b, C, h, w), seconds it took).

        `call`: the diffusers pipeline's arguments; `pipe`: a diffusers pipeline over the session's components
        (default: the text-to-image one). `on_step(step)` runs after each denoising step but the last (1-based;
        the last one ends with the decode, which the caller reports); raising `studio.progress.Stopped` there
        ends the call."""
        pipe = pipe or self.pipe
        final: dict[str, torch.Tensor] = {}
        steps = call["num_inference_steps"]

        def step_end(_pipe, i, t, kw):
            final["latents"] = kw["latents"]
            if on_step is not None and i + 1 < steps:
                on_step(i + 1)
            return kw

        with self.lock, oom_guard(what):
            t0 = time.perf_counter()
            self.set_scheduler(scheduler, pipe)
            self.set_tiling(call["height"], call["width"])
            try:
                out = pipe(**call, callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=["latents"])
            except Stopped:
                # Rather than diffusers' own `pipe._interrupt`: pipelines that honour it (SD, SDXL in 0.42) skip the
                # remaining steps but still VAE-decode the unfinished latents, seconds on a CPU, for a batch that is
                # dropped anyway.
                if hasattr(pipe, "maybe_free_model_hooks"):
                    pipe.maybe_free_model_hooks()  # what a finished call does last (resets CPU offload)
                raise
        return out, final["latents"], time.perf_counter() - t0

    def denoise_stepwise(self, call: dict[str, Any], scheduler: str, what: str,
                         progress: Callable[[int], Progress], pipe: Any | None = None
                         ) -> Generator[Progress, str | None, tuple[tuple[Any, torch.Tensor, float] | None, bool]]:
        """`denoise` in a worker thread, yielding `progress(step)` after each denoising step but the last.

        Returns (what `denoise` returns, or None if the call was cut short; whether "stop" was sent). See
        `studio.progress.iterate_callback`: the worker runs at most one step ahead, so at most two steps follow
        the last one the caller saw."""
        return (yield from iterate_callback(lambda report: self.denoise(call, scheduler, what, report, pipe),
                                            progress))


def load_session(t2i: str | None = None, clip: str | None = None, device: str | None = None,
                 one_step: bool | None = None) -> Text2ImageSession:
    """The session a registered Text to Image task loads (`Task.load`): the model and the shared CLIP scorer."""
    return Text2ImageSession.from_pretrained(t2i, scorer=get_scorer(clip, device=device), device=device,
                                             one_step=one_step)
