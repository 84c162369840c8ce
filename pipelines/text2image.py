"""Text to image with diffusers, which CLIP then reranks; refine (ReNO) and edit (directional CLIP) build on it.

- Generation: any diffusers text-to-image pipeline; the default is SD-Turbo (Sauer et al. 2023, "Adversarial
  Diffusion Distillation"): 512x512, one step, guidance 0, as its model card prescribes.
- Rerank: CLIPScore (Hessel et al. 2021, 100 * max(cos, 0)) of every image against the prompt, best first.
- Refine (ReNO): `pipelines/text2image_refine.py`; edit (directional CLIP): `pipelines/text2image_edit.py`; which
  model, its presets, the scheduler table and loading: `pipelines/text2image_models.py`. `Text2ImagePipeline` is
  the one entry point: its `iter_refine` / `iter_edit` run those modules' functions on it.

On the run protocol (`studio.progress`): `iter_generate(prompt, **settings)` yields a `Progress` for every
denoising step of every batch (step 1 to num_batches x num_steps; `stage` names the batch's images, `metrics` the
step within it; the last step of a batch comes after its images are decoded and previews the batch's first image)
and ends with the `Text2ImageOutput`. Send it "stop", or close it, to end early: a multi-step diffusers call runs in
a worker thread (`studio.progress.iterate_callback`) at most one step ahead and ends at its next step; the
interrupted batch is dropped, so the result holds the finished batches. `__call__` / `rerank` / `refine` / `edit`
drain the generators. Settings and their limits: `Text2ImageConfig` (`Text2ImageConfig.for_model(name)` gives a
model family's without loading it), `Text2ImageRefineConfig`, `Text2ImageEditConfig`; the tasks are registered as
`text2image`, `text2image-refine` and `text2image-edit`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

import torch
from PIL import Image

from pipelines import text2image_edit as _edit
from pipelines import text2image_refine as _refine
from pipelines.registry import register
from pipelines.text2image_edit import EditOutput, Text2ImageEditConfig
from pipelines.text2image_models import (
    DEFAULT_MODEL,
    DEFAULT_SIDE,
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_SIDE,
    MAX_STEPS,
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    check_size,
    dtype_kwarg,
    preset_for,
    resolve_pipeline,
)
from pipelines.text2image_refine import RefineOutput, Text2ImageRefineConfig
from studio.device import pick_device, pick_dtype
from studio.images import to_pil
from studio.progress import Progress, Result, Stopped, iterate_callback
from studio.runner import drain
from studio.scorer import get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, check_texts, param, resolve, run_settings

LOW_VRAM_BYTES = 6 * 1024**3  # below this, weights stay on the CPU between uses (SD-Turbo fp16 needs ~3.5 GB resident)
VAE_TILING_PIXELS = 768 * 768  # above this the VAE decodes in tiles (its activations dominate memory at 1024^2)
MAX_NEGATIVES = 8  # negative prompts per request (they are joined into one text of at most 77 tokens anyway)


@dataclass
class Text2ImageConfig:
    """Settings of one generation. The class defaults are SD-Turbo's (the default model); `for_model(name)` gives
    a model family's, without loading it."""

    num_steps: int = param(1, 1, MAX_STEPS, label="Steps",
                           help="denoising steps; the model family's: 1 for SD-Turbo and SDXL-Turbo (model cards), "
                                "25 for other Stable Diffusion models (ours; diffusers' default is 50)")
    guidance_scale: float = param(0.0, 0.0, MAX_GUIDANCE, step=0.5,
                                  label="Guidance scale (negative prompts need > 1)",
                                  help="classifier-free guidance; the model family's: 0 for the Turbo models (model "
                                       "cards), 7.5 for other Stable Diffusion models (diffusers' default)")
    width: int = param(DEFAULT_SIDE, 16, MAX_SIDE, step=8, label="Width",
                       help="a multiple of 8; the model's: 512 for the Turbo models (model cards), else the UNet's "
                            "sample size times the VAE factor once loaded (512 before)")
    height: int = param(DEFAULT_SIDE, 16, MAX_SIDE, step=8, label="Height",
                        help="a multiple of 8; the model's, as for width")
    num_images: int = param(4, 1, MAX_IMAGES, label="Images (candidates)",
                            help="images per request, the rerank's candidates; 4 (ours: enough to choose from)")
    batch_size: int = param(4, 1, MAX_BATCH, label="Batch size (images per forward pass)",
                            help="images per diffusers call (the images do not depend on it); 4 (ours)")
    seed: int = param(0, 0, SEED_MAX, label="Seed (image i uses seed + i)",
                      help="image i starts from the noise of seed + i (mod 2**32), so each image reproduces alone")
    scheduler: str = param("default", choices=tuple(SCHEDULERS), label="Scheduler (multi-step models)",
                           help="'default' keeps the model's own; the others are diffusers' schedulers of those "
                                "names, configured from the model's")
    rerank: bool = param(True, label="Sort by CLIP score",
                         help="sort the images by CLIPScore against the prompt, best first; it needs a CLIP scorer, "
                              "so a pipeline built without one starts with it off")
    negative_prompts: str = param("", label="Negative prompts (one per line)",
                                  help=f"what the images should not show: texts one per line (or a list), at most "
                                       f"{MAX_NEGATIVES}, joined with ', ' for diffusers; needs guidance_scale > 1")

    @classmethod
    def for_model(cls, name: str | None = None, size: int | None = None) -> "Text2ImageConfig":
        """The settings a model (repo id or folder; None: the default model) starts with: its preset's steps,
        guidance and size, else `size` (a loaded model's), else 512. Loads nothing."""
        return cls.from_preset(preset_for(name or DEFAULT_MODEL) or MULTI_STEP_PRESET, size)

    @classmethod
    def from_preset(cls, preset: ModelPreset, size: int | None = None) -> "Text2ImageConfig":
        side = preset.size or size or DEFAULT_SIDE
        return cls(num_steps=preset.num_steps, guidance_scale=preset.guidance_scale, width=side, height=side)


@dataclass
class Text2ImageOutput(Result):
    """Generated images (best first when reranked) with everything needed to reproduce or edit them.

    `seeds[i]` and `clip_scores[i]` (CLIPScore against the prompt; empty without a scorer) belong to `images[i]`;
    scores: {"clip_score": the best}. `latents` (N, C, h, w) float32 CPU: the denoised latents, kept for `edit`;
    `noise` (N, C, h, w): the initial noise of each image. `seed` is the first image's."""

    task = "text2image"
    seeds: list[int] = field(default_factory=list)
    clip_scores: list[float] = field(default_factory=list)
    prompt: str = ""
    model: str = ""
    clip_model: str | None = None
    latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    reranked: bool = False

    def metadata(self) -> dict[str, Any]:
        """The request's settings (its base seed), model and CLIP model."""
        return {**super().metadata(), "seed": self.settings.get("seed", self.seed), "model": self.model,
                "clip_model": self.clip_model}

    def image_metadata(self, i: int) -> dict[str, Any]:
        """What image `i`'s PNG carries: the settings that make that image alone (its seed, num_images 1)."""
        meta = {**self.metadata(), "seed": self.seeds[i], "num_images": 1}
        meta["scores"] = {"clip_score": round(self.clip_scores[i], 4)} if self.clip_scores else {}
        return meta


class Text2ImagePipeline:
    """Generate with diffusers; rerank, refine (ReNO) and edit (directional CLIP) with the shared CLIP scorer.

    Build from components, `Text2ImagePipeline(pipe, scorer=..., model_name=..., preset=...)` (the preset: what
    the model is trained for; found from `model_name` for known models), or with `from_pretrained(...)`.
    `config`, `refine_config`, `edit_config` hold the settings each call starts from.

    >>> t2i = Text2ImagePipeline.from_pretrained("stabilityai/sd-turbo", scorer=get_scorer())  # doctest: +SKIP
    >>> out = t2i.rerank("a watercolor fox", num_images=4, seed=0)  # best first  # doctest: +SKIP
    >>> out.save("fox/")  # text2image-0.png ... with the settings of each image inside  # doctest: +SKIP
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
        self._base_scheduler = pipe.scheduler
        self._lock = threading.RLock()  # Gradio runs handlers in threads; the pipeline's scheduler is shared state
        self._refresh_placement()
        for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False)  # refine/edit differentiate w.r.t. latents only
                module.eval()
        size = self.default_size
        self.config = dataclasses.replace(Text2ImageConfig.from_preset(self.preset, size), rerank=scorer is not None)
        self.refine_config = Text2ImageRefineConfig(width=size, height=size)
        self.edit_config = Text2ImageEditConfig()

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

    def _clip_name(self) -> str | None:
        if self.scorer is None:
            return None
        return str(getattr(self.scorer, "spec", None) or type(self.scorer).__name__)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, prompt: Any, settings: dict[str, Any]) -> tuple[str, Text2ImageConfig]:
        """The checked prompt and the resolved config (ValueError naming the argument and the value)."""
        prompt = check_text(prompt, "prompt")
        settings = dict(settings)
        if "negative_prompts" in settings:  # None, lines or a list -> one text per line
            settings["negative_prompts"] = "\n".join(check_texts(settings["negative_prompts"], "negative_prompts",
                                                                 MAX_NEGATIVES))
        cfg = resolve(self.config, settings)
        check_size(cfg.width, cfg.height)
        if cfg.negative_prompts and cfg.guidance_scale <= 1.0:
            raise ValueError(f"`negative_prompts` have no effect unless `guidance_scale` > 1 (classifier-free "
                             f"guidance), got guidance_scale={cfg.guidance_scale} with "
                             f"negative_prompts={cfg.negative_prompts!r}")
        if cfg.rerank:
            self._require_scorer("`rerank`")
        return prompt, cfg

    # ------------------------------------------------------------------ helpers (refine and edit use them too)
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

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, 3, H, W) images in [0, 1], differentiable."""
        vae = self.pipe.vae
        z = latents / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        image = vae.decode(z.to(vae.dtype)).sample.float()
        return (image / 2 + 0.5).clamp(0, 1)

    def _set_checkpointing(self, modules: list[Any], mode: str) -> None:
        """Gradient checkpointing for refine/edit: "on", "off", or "auto" (on a GPU only: it trades compute for
        activation memory, which a CPU with ample RAM does not need; on CPU it slows small models several-fold)."""
        on = self.device.type != "cpu" if mode == "auto" else mode == "on"
        for m in modules:
            if getattr(m, "_supports_gradient_checkpointing", False) and m.is_gradient_checkpointing != on:
                m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()

    def _denoise(self, call: dict[str, Any], scheduler: str, what: str,
                 on_step: Callable[[int], None] | None = None) -> tuple[Any, torch.Tensor, float]:
        """One diffusers call under the lock: (output, final latents (b, C, h, w), seconds it took).

        `on_step(step)` runs after each denoising step but the last (1-based; the last one ends with the decode,
        which the caller reports); raising `studio.progress.Stopped` there ends the call."""
        final: dict[str, torch.Tensor] = {}
        steps = call["num_inference_steps"]

        def step_end(pipe, i, t, kw):
            final["latents"] = kw["latents"]
            if on_step is not None and i + 1 < steps:
                on_step(i + 1)
            return kw

        with self._lock, oom_guard(what):
            t0 = time.perf_counter()
            self._set_scheduler(scheduler)
            self._set_tiling(call["height"], call["width"])
            try:
                out = self.pipe(**call, callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=["latents"])
            except Stopped:
                # Rather than diffusers' own `pipe._interrupt`: pipelines that honour it (SD, SDXL in 0.42) skip the
                # remaining steps but still VAE-decode the unfinished latents, seconds on a CPU, for a batch that is
                # dropped anyway.
                if hasattr(self.pipe, "maybe_free_model_hooks"):
                    self.pipe.maybe_free_model_hooks()  # what a finished call does last (resets CPU offload)
                raise
        return out, final["latents"], time.perf_counter() - t0

    def _denoise_stepwise(self, call: dict[str, Any], scheduler: str, what: str,
                          progress: Callable[[int], Progress]
                          ) -> Generator[Progress, str | None, tuple[tuple[Any, torch.Tensor, float] | None, bool]]:
        """`_denoise` in a worker thread, yielding `progress(step)` after each denoising step but the last.

        Returns (what `_denoise` returns, or None if the call was cut short; whether "stop" was sent). See
        `studio.progress.iterate_callback`: the worker runs at most one step ahead, so at most two steps follow
        the last one the caller saw."""
        return (yield from iterate_callback(lambda report: self._denoise(call, scheduler, what, report), progress))

    # ------------------------------------------------------------------ generation (+ rerank)
    def __call__(self, prompt: str, *, callback: Callable | None = None, **settings: Any) -> Text2ImageOutput:
        """Generate `num_images` images (see `iter_generate`); `callback(step, total, preview)` returning False
        stops it."""
        return drain(self.iter_generate(prompt, **settings), callback)

    def rerank(self, prompt: str, *, callback: Callable | None = None, **settings: Any) -> Text2ImageOutput:
        """Generate `num_images` images and return them sorted by CLIPScore against the prompt, best first."""
        return drain(self.iter_generate(prompt, **{**settings, "rerank": True}), callback)

    def iter_generate(self, prompt: str, **settings: Any) -> Iterator[Progress | Text2ImageOutput]:
        """Yield a `Progress` for each denoising step, then the `Text2ImageOutput` (see the module docstring).

        settings: any `Text2ImageConfig` field (num_steps, guidance_scale, width, height, num_images, batch_size,
        seed, scheduler, rerank, negative_prompts). Image i uses seed `seed + i`, so each image is reproducible on
        its own with `num_images=1, seed=seed + i`. Scores are computed whenever a scorer is present; `rerank`
        sorts by them.
        """
        t_start = time.perf_counter()
        # 1. check inputs
        prompt, cfg = self.check_inputs(prompt, settings)
        negative = ", ".join(check_texts(cfg.negative_prompts, "negative_prompts", MAX_NEGATIVES)) or None
        n, steps = cfg.num_images, cfg.num_steps
        seeds = [(cfg.seed + i) % 2**32 for i in range(n)]
        noise, generators = self._noise(seeds, cfg.height, cfg.width)  # (N, C, h, w)

        # 2. generate in batches; a multi-step call runs in a worker thread so that each step reaches the caller
        images: list[Image.Image] = []
        latents, scores = [], []
        timings = {"generate_s": 0.0, "score_s": 0.0}
        stopped = False
        total = math.ceil(n / cfg.batch_size) * steps
        shown = [0]  # the last step reported
        for batch, start in enumerate(range(0, n, cfg.batch_size)):
            chunk = noise[start:start + cfg.batch_size]
            call = dict(
                prompt=[prompt] * len(chunk), negative_prompt=[negative] * len(chunk) if negative else None,
                num_inference_steps=steps, guidance_scale=cfg.guidance_scale, width=cfg.width, height=cfg.height,
                latents=chunk.to(self.device, self.dtype), generator=generators[start:start + cfg.batch_size],
                output_type="pt",
            )
            what = f"generation of {len(chunk)} image(s) at {cfg.width}x{cfg.height}"
            stage = (f"image {start + 1} of {n}" if len(chunk) == 1 else
                     f"images {start + 1}–{start + len(chunk)} of {n}")

            def progress(step: int, _offset: int = batch * steps, _stage: str = stage) -> Progress:
                shown[0] = _offset + step
                return Progress(_offset + step, total, None, {"batch_step": step, "batch_steps": steps}, _stage)

            if steps == 1:  # nothing to report within the call: no thread
                done = self._denoise(call, cfg.scheduler, what)
            else:
                done, stopped = yield from self._denoise_stepwise(call, cfg.scheduler, what, progress)
                if done is None:  # stopped mid-call: this batch is dropped
                    break
            out, final, seconds = done
            timings["generate_s"] += seconds
            if self.scorer is not None:  # scored on the device, before the copy to the CPU
                t0 = time.perf_counter()
                with self._lock, oom_guard("CLIP scoring"):
                    scores.extend(self._score(out.images, prompt))
                timings["score_s"] += time.perf_counter() - t0
            batch_images = [to_pil(im) for im in out.images]  # (b, 3, H, W) in [0, 1] -> PIL
            images.extend(batch_images)
            latents.append(final.float().cpu())
            if stopped:  # the stop came during the call's last step: the batch is finished and kept
                break
            item = progress(steps)
            item.preview = batch_images[0]
            if scores:
                item.metrics["clip_score"] = max(scores)
            if (yield item) == "stop":
                stopped = True
                break

        # 3. rerank
        order = list(range(len(images)))
        if cfg.rerank:
            order.sort(key=lambda i: -scores[i])

        # 4. package the result
        kept = [seeds[i] for i in order]
        timings["total_s"] = time.perf_counter() - t_start
        yield Text2ImageOutput(
            images=[images[i] for i in order], seeds=kept, clip_scores=[scores[i] for i in order] if scores else [],
            scores={"clip_score": max(scores)} if scores else {}, seed=kept[0] if kept else cfg.seed,
            settings=run_settings(cfg, prompt=prompt), prompt=prompt, model=self.model_name,
            clip_model=self._clip_name(), latents=torch.cat(latents)[order] if latents else noise[:0],
            noise=noise[:len(images)][order], reranked=cfg.rerank, stopped=stopped, steps_run=shown[0],
            timings=timings, notice=getattr(self.scorer, "notice", None))

    # ------------------------------------------------------------------ refine (ReNO) and edit (directional CLIP)
    def refine(self, prompt: str, *, callback: Callable | None = None, **settings: Any) -> RefineOutput:
        """Optimise the initial noise of a one-step sample for CLIPScore (see `iter_refine`)."""
        return drain(self.iter_refine(prompt, **settings), callback)

    def iter_refine(self, prompt: str, **settings: Any) -> Iterator[Progress | RefineOutput]:
        """ReNO on the image that `seed` (at `width` x `height`) gives for `prompt`; settings: any
        `Text2ImageRefineConfig` field. See `pipelines.text2image_refine.iter_refine`."""
        return _refine.iter_refine(self, prompt, **settings)

    def edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str, *, callback: Callable | None = None,
             **settings: Any) -> EditOutput:
        """Move a kept latent toward `edit_prompt` (see `iter_edit`)."""
        return drain(self.iter_edit(latents, source_prompt, edit_prompt, **settings), callback)

    def iter_edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str,
                  **settings: Any) -> Iterator[Progress | EditOutput]:
        """Directional-CLIP edit of a generated image's latent; settings: any `Text2ImageEditConfig` field. See
        `pipelines.text2image_edit.iter_edit`."""
        return _edit.iter_edit(self, latents, source_prompt, edit_prompt, **settings)


def _load(t2i: str | None = None, clip: str | None = None, device: str | None = None,
          one_step: bool | None = None) -> Text2ImagePipeline:
    return Text2ImagePipeline.from_pretrained(t2i, scorer=get_scorer(clip, device=device), device=device,
                                              one_step=one_step)


register(Task(
    name="text2image", title="Text → image (diffusers, reranked by CLIP)", config=Text2ImageConfig,
    pipeline=Text2ImagePipeline, method="iter_generate", models=("t2i", "clip"), load=_load,
    inputs=(Input("prompt", "text", help="what to draw"),)))
register(Task(
    name="text2image-refine", title="Text → image: CLIP refine (ReNO)", config=Text2ImageRefineConfig,
    pipeline=Text2ImagePipeline, method="iter_refine", models=("t2i", "clip"), load=_load,
    inputs=(Input("prompt", "text", help="the prompt of the image to refine (its seed and size are settings)"),)))
register(Task(
    name="text2image-edit", title="Text → image: CLIP edit (directional)", config=Text2ImageEditConfig,
    pipeline=Text2ImagePipeline, method="iter_edit", models=("t2i", "clip"), load=_load,
    inputs=(Input("latents", "state", help="a generated image's latent (`Text2ImageOutput.latents[i]`)"),
            Input("source_prompt", "text", help="the prompt it was made from"),
            Input("edit_prompt", "text", help="the text to move it toward"))))
