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

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

import numpy as np
import torch
from PIL import Image

from pipelines.text2image_models import (
    MAX_SIDE,
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    dtype_kwarg,
    preset_for,
    resolve_pipeline,
)
from studio.device import pick_device, pick_dtype
from studio.images import load_image, to_pil
from studio.progress import Progress, Result, Stopped, iterate_callback
from studio.scorer import get_scorer, oom_guard

LOW_VRAM_BYTES = 6 * 1024**3  # below this, weights stay on the CPU between uses (SD-Turbo fp16 needs ~3.5 GB resident)
VAE_TILING_PIXELS = 768 * 768  # above this the VAE decodes in tiles (its activations dominate memory at 1024^2)


def load_start_image(image: Any, name: str = "image", multiple: int = 8) -> tuple[Image.Image, str | None]:
    """An uploaded start image at a size the VAE takes: read and bounded as every upload (`studio.images.load_image`,
    at most `MAX_SIDE` a side), each side a multiple of `multiple` (the VAE halves it three times). A side that is
    not is resized down to one, and the second value says so (None when the image is used as it is)."""
    img = load_image(image, name, max_side=MAX_SIDE)
    w, h = img.size
    size = (w // multiple * multiple, h // multiple * multiple)
    if size == (w, h):
        return img, None
    return (img.resize(size, Image.Resampling.LANCZOS),
            f"`{name}` was resized from {w}×{h} to {size[0]}×{size[1]} (sides must be multiples of {multiple})")


def image_tensor(images: list[Image.Image]) -> torch.Tensor:
    """(B, 3, H, W) float32 in [0, 1] from RGB PIL images of one size."""
    return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images])


@dataclass
class Batches:
    """What `Text2ImageSession.iterate_calls` made: the finished batches' images (PIL), their final latents
    (N, C, h, w) float32 CPU, their CLIPScores (empty without a scorer), whether a stop ended it, the last step
    reported, and the seconds spent denoising and scoring."""

    images: list[Image.Image] = field(default_factory=list)
    latents: list[torch.Tensor] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    stopped: bool = False
    steps_run: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"generate_s": 0.0, "score_s": 0.0})


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
        self._variants: dict[str, Any] = {}  # diffusers pipelines over the same components, by kind
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

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) float32 latents (scaled as the UNet takes them): the mean
        of the VAE's posterior (no sampling), so `decode(encode(x))` is one fixed round trip through the VAE."""
        vae = self.pipe.vae
        dist = vae.encode((images * 2 - 1).to(self.device, vae.dtype)).latent_dist
        z = dist.mode().float()
        if getattr(vae.config, "shift_factor", None):
            z = z - vae.config.shift_factor
        return z * vae.config.scaling_factor

    def variant(self, kind: str) -> Any:
        """A diffusers pipeline of another kind over the session's components ("image2image", "inpainting"; made once
        with diffusers' `from_pipe`, which shares every module: no second copy of the weights). ValueError where
        diffusers has no such pipeline for this model family."""
        kinds = {"text2image": None, "image2image": "AutoPipelineForImage2Image",
                 "inpainting": "AutoPipelineForInpainting"}
        if kind not in kinds:
            raise ValueError(f"`kind` must be one of {list(kinds)}, got {kind!r}")
        if kind == "text2image":
            return self.pipe
        if kind not in self._variants:
            import diffusers

            try:
                made = getattr(diffusers, kinds[kind]).from_pipe(self.pipe)
            except ValueError as err:  # diffusers: no pipeline of that kind for this class
                raise ValueError(f"{self.model_name!r} ({type(self.pipe).__name__}) has no diffusers {kind} "
                                 f"pipeline: {err}") from None
            made.set_progress_bar_config(disable=True)
            self._variants[kind] = made
        return self._variants[kind]

    # ------------------------------------------------------------------ one diffusers call, step by step
    def denoise(self, call: dict[str, Any], scheduler: str, what: str, on_step: Callable[[int], None] | None = None,
                pipe: Any | None = None, steps: int | None = None, size: tuple[int, int] | None = None,
                blend: Callable[[Any, Any, torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[Any, torch.Tensor, float]:
        """One diffusers call under the lock: (output, final latents (b, C, h, w), seconds it took).

        `call`: the diffusers pipeline's arguments; `pipe`: a diffusers pipeline over the session's components
        (default: the text-to-image one; see `variant`); `steps`: the denoising steps the call runs (default
        `num_inference_steps`; fewer for image-to-image, which skips the first ones). `on_step(step)` runs after each
        denoising step but the last (1-based; the last one ends with the decode, which the caller reports); raising
        `studio.progress.Stopped` there ends the call. `size`: (width, height) of the images (default the call's
        `width` and `height`; image-to-image pipelines take the image's). `blend(pipe, t, latents)`, when given,
        replaces the latents after each step (latent-blending inpainting)."""
        pipe = pipe or self.pipe
        width, height = size or (call["width"], call["height"])
        final: dict[str, torch.Tensor] = {}
        steps = steps or call["num_inference_steps"]

        def step_end(_pipe, i, t, kw):
            if blend is not None:
                kw["latents"] = blend(_pipe, t, kw["latents"])
            final["latents"] = kw["latents"]
            if on_step is not None and i + 1 < steps:
                on_step(i + 1)
            return kw

        with self.lock, oom_guard(what):
            t0 = time.perf_counter()
            self.set_scheduler(scheduler, pipe)
            self.set_tiling(height, width)
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
                         progress: Callable[[int], Progress], pipe: Any | None = None, steps: int | None = None,
                         size: tuple[int, int] | None = None,
                         blend: Callable[[Any, Any, torch.Tensor], torch.Tensor] | None = None
                         ) -> Generator[Progress, str | None, tuple[tuple[Any, torch.Tensor, float] | None, bool]]:
        """`denoise` in a worker thread, yielding `progress(step)` after each denoising step but the last.

        Returns (what `denoise` returns, or None if the call was cut short; whether "stop" was sent). See
        `studio.progress.iterate_callback`: the worker runs at most one step ahead, so at most two steps follow
        the last one the caller saw."""
        def run(report: Callable[[int], None]) -> tuple[Any, torch.Tensor, float]:
            return self.denoise(call, scheduler, what, report, pipe, steps, size, blend)

        return (yield from iterate_callback(run, progress))


    def iterate_calls(self, calls: list[dict[str, Any]], steps: int, scheduler: str, what: str, prompt: str,
                      size: tuple[int, int], pipe: Any | None = None,
                      finish: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                      blend: Callable[[int, Any, Any, torch.Tensor], torch.Tensor] | None = None
                      ) -> Generator[Progress, str | None, Batches]:
        """Run diffusers calls (a batch of images each; `output_type="pt"`) one after another on the run protocol.

        Yields a `Progress` after every denoising step of every call (step 1 to len(calls) x `steps`; `stage` names
        the call's images; `metrics` the step within it); the last step of a call comes after its images are
        decoded, `finish(images (b, 3, H, W) in [0, 1], call index)` has run on them (e.g. a composite) and the
        scorer has scored them against `prompt`, and previews its first image. A multi-step call runs in a worker
        thread (see `denoise_stepwise`). "stop" sent in ends it: a call cut short is dropped, so the returned
        `Batches` holds the finished calls. `what` names the work in an out-of-memory message; `size`: (width,
        height) of the images; `blend(call index, pipe, t, latents)`: see `denoise`."""
        done_ = Batches()
        total = len(calls) * steps
        n = sum(len(call["prompt"]) for call in calls)
        first = 0  # the first image of the call
        for index, call in enumerate(calls):
            b = len(call["prompt"])
            label = f"{what} of {b} image(s) at {size[0]}x{size[1]}"
            stage = f"image {first + 1} of {n}" if b == 1 else f"images {first + 1}–{first + b} of {n}"

            def progress(step: int, _offset: int = index * steps, _stage: str = stage) -> Progress:
                done_.steps_run = _offset + step
                return Progress(_offset + step, total, None, {"batch_step": step, "batch_steps": steps}, _stage)

            mix = None if blend is None else functools.partial(blend, index)
            if steps == 1:  # nothing to report within the call: no thread
                ran = self.denoise(call, scheduler, label, pipe=pipe, steps=steps, size=size, blend=mix)
            else:
                ran, done_.stopped = yield from self.denoise_stepwise(call, scheduler, label, progress, pipe, steps,
                                                                      size, mix)
                if ran is None:  # stopped mid-call: this batch is dropped
                    break
            out, final, seconds = ran
            done_.timings["generate_s"] += seconds
            images = out.images if finish is None else finish(out.images, index)  # (b, 3, H, W) in [0, 1]
            if self.scorer is not None:  # scored on the device, before the copy to the CPU
                t0 = time.perf_counter()
                with self.lock, oom_guard("CLIP scoring"):
                    done_.scores.extend(self.score(images, prompt))
                done_.timings["score_s"] += time.perf_counter() - t0
            batch_images = [to_pil(im) for im in images]
            done_.images.extend(batch_images)
            done_.latents.append(final.float().cpu())
            first += b
            if done_.stopped:  # the stop came during the call's last step: the batch is finished and kept
                break
            item = progress(steps)
            item.preview = batch_images[0]
            if done_.scores:
                item.metrics["clip_score"] = max(done_.scores)
            if (yield item) == "stop":
                done_.stopped = True
                break
        return done_


T = TypeVar("T", bound="SessionTask")


class SessionTask:
    """How every Text to Image task is built (diffusers' shape: separate pipeline classes over one set of
    components): from a diffusers pipeline or a `Text2ImageSession` (`session_kwargs` go to `Text2ImageSession.of`),
    with `from_pretrained(...)`, or with `from_pipe(other_task)`, which shares the other task's session (no second
    copy of any weight). `config` holds the settings each call starts from: `make_config(session)`."""

    def __init__(self, pipe: Any, scorer: Any | None = None, **session_kwargs: Any):
        self.session = Text2ImageSession.of(pipe, scorer, **session_kwargs)
        self.config = self.make_config(self.session)

    def make_config(self, session: Text2ImageSession) -> Any:
        """The task's config for `session`'s model family (each task defines it)."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls: type[T], model_id_or_folder: str | None = None, scorer: Any | None = None,
                        **kwargs: Any) -> T:
        """Load a model into a new session (see `Text2ImageSession.from_pretrained` for the arguments)."""
        return cls(Text2ImageSession.from_pretrained(model_id_or_folder, scorer, **kwargs))

    @classmethod
    def from_pipe(cls: type[T], other: Any) -> T:
        """This task on another Text to Image task's session (the same weights, no copy)."""
        return cls(other.session)


class SeededImages(Result):
    """What the image results of the Text to Image tasks share: the request's settings with its base seed, model and
    CLIP model, and per image the settings that make that image alone. Subclasses are dataclasses with `seeds`,
    `clip_scores`, `model` and `clip_model` fields."""

    def metadata(self) -> dict[str, Any]:
        """The request's settings (its base seed), model and CLIP model."""
        return {**super().metadata(), "seed": self.settings.get("seed", self.seed), "model": self.model,
                "clip_model": self.clip_model}

    def image_metadata(self, i: int) -> dict[str, Any]:
        """What image `i`'s PNG carries: the settings that make that image alone (its seed, num_images 1)."""
        meta = {**self.metadata(), "seed": self.seeds[i], "num_images": 1}
        meta["scores"] = {"clip_score": round(self.clip_scores[i], 4)} if self.clip_scores else {}
        return meta


def load_session(t2i: str | None = None, clip: str | None = None, device: str | None = None,
                 one_step: bool | None = None) -> Text2ImageSession:
    """The session a registered Text to Image task loads (`Task.load`): the model and the shared CLIP scorer."""
    return Text2ImageSession.from_pretrained(t2i, scorer=get_scorer(clip, device=device), device=device,
                                             one_step=one_step)
