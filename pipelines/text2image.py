"""Text to image with diffusers, which CLIP then reranks: the `text2image` task, on a Text to Image session.

- Generation: any diffusers text-to-image pipeline; the default is SD-Turbo (Sauer et al. 2023, "Adversarial
  Diffusion Distillation"): 512x512, one step, guidance 0, as its model card prescribes.
- Rerank: CLIPScore (Hessel et al. 2021, 100 * max(cos, 0)) of every image against the prompt, best first.

The model, the scorer and what every Text to Image task shares (noise, scheduler, decoding, the lock) are the
session's (`pipelines/text2image_core.py`); which model, its presets, the scheduler table and loading:
`pipelines/text2image_models.py`. The other tasks on the same session: refine (`text2image_refine.py`) and edit
(`text2image_edit.py`); `Text2ImagePipeline.task(name)` builds them on this pipeline's session, and `refine` /
`edit` are shortcuts to them.

On the run protocol (`studio.progress`): `iter_generate(prompt, **settings)` yields a `Progress` for every
denoising step of every batch (step 1 to num_batches x num_steps; `stage` names the batch's images, `metrics` the
step within it; the last step of a batch comes after its images are decoded and previews the batch's first image)
and ends with the `Text2ImageOutput`. Send it "stop", or close it, to end early: a multi-step diffusers call runs in
a worker thread (`studio.progress.iterate_callback`) at most one step ahead and ends at its next step; the
interrupted batch is dropped, so the result holds the finished batches. `__call__` / `rerank` drain the generator.
Settings and their limits: `Text2ImageConfig` (`Text2ImageConfig.for_model(name)` gives a model family's without
loading it); the task is registered as `text2image`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from pipelines.registry import get_task, register
from pipelines.text2image_core import SeededImages, SessionTask, Text2ImageSession, load_session
from pipelines.text2image_models import (
    DEFAULT_MODEL,
    DEFAULT_SIDE,
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_NEGATIVES,
    MAX_SIDE,
    MAX_STEPS,
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    check_size,
    preset_for,
)
from studio.progress import Progress
from studio.runner import drain
from studio.tasks import SEED_MAX, Input, Task, check_text, check_texts, param, resolve, run_settings


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
class Text2ImageOutput(SeededImages):
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


class Text2ImagePipeline(SessionTask):
    """Generate with diffusers and rerank by CLIPScore: the `text2image` task, on a `Text2ImageSession`.

    Build from a diffusers pipeline, `Text2ImagePipeline(pipe, scorer=..., model_name=..., preset=...)` (the preset:
    what the model is trained for; found from `model_name` for known models), from a session, with
    `from_pretrained(...)`, or with `from_pipe(other_task)` (sharing its session). `config` holds the settings each
    call starts from (the model family's). The other Text to Image tasks run on the same session through
    `task(name)`; `refine` / `edit` (and their `iter_` forms) are shortcuts to those.

    >>> t2i = Text2ImagePipeline.from_pretrained("stabilityai/sd-turbo", scorer=get_scorer())  # doctest: +SKIP
    >>> out = t2i.rerank("a watercolor fox", num_images=4, seed=0)  # best first  # doctest: +SKIP
    >>> out.save("fox/")  # text2image-0.png ... with the settings of each image inside  # doctest: +SKIP
    """

    def __init__(self, pipe: Any, scorer: Any | None = None, *, model_name: str = "custom",
                 preset: ModelPreset | None = None):
        super().__init__(pipe, scorer, model_name=model_name, preset=preset)
        self._tasks: dict[str, Any] = {}

    def make_config(self, session: Text2ImageSession) -> Any:
        return dataclasses.replace(Text2ImageConfig.from_preset(session.preset, session.default_size),
                                   rerank=session.scorer is not None)

    # ------------------------------------------------------------------ the session's, for convenience
    @property
    def pipe(self) -> Any:
        return self.session.pipe

    @property
    def scorer(self) -> Any | None:
        return self.session.scorer

    @scorer.setter
    def scorer(self, scorer: Any | None) -> None:  # the page swaps the demo CLIP for the real one when it arrives
        self.session.scorer = scorer

    @property
    def model_name(self) -> str:
        return self.session.model_name

    @property
    def preset(self) -> ModelPreset:
        return self.session.preset

    @property
    def source(self) -> str | None:
        return self.session.source

    @property
    def device(self) -> torch.device:
        return self.session.device

    @property
    def dtype(self) -> torch.dtype:
        return self.session.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Text2ImagePipeline":
        """Move the diffusers pipeline (see `Text2ImageSession.to`)."""
        self.session.to(device, dtype)
        return self

    # ------------------------------------------------------------------ the other tasks on this session
    def task(self, name: str) -> Any:
        """The registered Text to Image task `name` (e.g. "text2image-refine") on this session, built once with its
        class's `from_pipe` (the registry finds the class, so this file imports no other task's)."""
        if name not in self._tasks:
            found = get_task(name)
            if "t2i" not in found.models:
                raise ValueError(f"task {name!r} is not a Text to Image task")
            self._tasks[name] = found.pipeline.from_pipe(self)
        return self._tasks[name]

    @property
    def refine_config(self) -> Any:
        """The settings `refine` starts from (the refine task's `config`)."""
        return self.task("text2image-refine").config

    @property
    def edit_config(self) -> Any:
        """The settings `edit` starts from (the edit task's `config`)."""
        return self.task("text2image-edit").config

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
            self.session.require_scorer("`rerank`")
        return prompt, cfg

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
        session = self.session
        noise, generators = session.noise(seeds, cfg.height, cfg.width)  # (N, C, h, w)

        # 2. generate in batches; a multi-step call runs in a worker thread so that each step reaches the caller
        calls = [dict(prompt=[prompt] * len(chunk), negative_prompt=[negative] * len(chunk) if negative else None,
                      num_inference_steps=steps, guidance_scale=cfg.guidance_scale, width=cfg.width,
                      height=cfg.height, latents=chunk.to(session.device, session.dtype),
                      generator=generators[start:start + cfg.batch_size], output_type="pt")
                 for start in range(0, n, cfg.batch_size) for chunk in [noise[start:start + cfg.batch_size]]]
        done = yield from session.iterate_calls(calls, steps, cfg.scheduler, "generation", prompt,
                                             (cfg.width, cfg.height))
        images, scores, latents, timings = done.images, done.scores, done.latents, done.timings

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
            settings=run_settings(cfg, prompt=prompt), prompt=prompt, model=session.model_name,
            clip_model=session.clip_name, latents=torch.cat(latents)[order] if latents else noise[:0],
            noise=noise[:len(images)][order], reranked=cfg.rerank, stopped=done.stopped, steps_run=done.steps_run,
            timings=timings, notice=getattr(session.scorer, "notice", None))

    # ------------------------------------------------------------------ shortcuts to the refine and edit tasks
    def refine(self, prompt: str, *, callback: Callable | None = None, **settings: Any) -> Any:
        """ReNO on the image `seed` gives for `prompt`: the `text2image-refine` task on this session."""
        return drain(self.iter_refine(prompt, **settings), callback)

    def iter_refine(self, prompt: str, **settings: Any) -> Iterator[Any]:
        """The `text2image-refine` task's `iter_refine` on this session."""
        return self.task("text2image-refine").iter_refine(prompt, **settings)

    def edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str, *, callback: Callable | None = None,
             **settings: Any) -> Any:
        """Move a kept latent toward `edit_prompt`: the `text2image-edit` task on this session."""
        return drain(self.iter_edit(latents, source_prompt, edit_prompt, **settings), callback)

    def iter_edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str, **settings: Any) -> Iterator[Any]:
        """The `text2image-edit` task's `iter_edit` on this session."""
        return self.task("text2image-edit").iter_edit(latents, source_prompt, edit_prompt, **settings)


register(Task(
    name="text2image", title="Text → image (diffusers, reranked by CLIP)", config=Text2ImageConfig,
    pipeline=Text2ImagePipeline, method="iter_generate", models=("t2i", "clip"),
    load=lambda **models: Text2ImagePipeline(load_session(**models)),
    inputs=(Input("prompt", "text", help="what to draw"),)))
