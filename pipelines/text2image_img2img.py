"""Text to Image img2img: your picture and a prompt -> images that keep what `1 - strength` of the noise leaves.

SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations"): the
image's latent is noised to the level `strength` names and denoised toward the prompt, by diffusers' own
image-to-image pipeline for the model family (`AutoPipelineForImage2Image.from_pipe`: the loaded components, no
second copy of the weights). diffusers runs int(num_steps x strength) of the schedule's steps. The two ends are
exact: strength 0 returns the image through the VAE (its latent decoded, no denoising), strength 1 keeps nothing of
it, which is text-to-image from the seed's noise (diffusers' img2img at strength 1 would still add the image's
latent to the first, largest noise).

On the run protocol: `Text2ImageImg2ImgPipeline.iter_img2img(image, prompt, **settings)` yields a `Progress` per
denoising step of every batch (as `text2image` does; strength 0: one step, the VAE round trip) and ends with the
`Img2ImgOutput`; "stop" keeps the finished batches. Settings: `Text2ImageImg2ImgConfig` (`for_model(name)`: a
model family's); the task is registered as `text2image-img2img`, on the Text to Image session
(`pipelines/text2image_core.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from pipelines.registry import register
from pipelines.text2image_core import (
    SeededImages,
    SessionTask,
    Text2ImageSession,
    image_tensor,
    load_session,
    load_start_image,
)
from pipelines.text2image_models import (
    DEFAULT_MODEL,
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_NEGATIVES,
    MAX_STEPS,
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    preset_for,
)
from studio.images import to_pil
from studio.progress import Progress
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, check_texts, param, resolve, run_settings

# A one-step model's img2img: 2 steps at strength 0.5 run one denoising step (SD-Turbo's model card).
ONE_STEP_IMG2IMG = (2, 0.5)
MULTI_STEP_STRENGTH = 0.75  # AUTOMATIC1111's default denoising strength (diffusers' is 0.8)


@dataclass
class Text2ImageImg2ImgConfig:
    """Settings of one img2img request. The class defaults are SD-Turbo's (the default model); `for_model(name)`
    gives a model family's without loading it."""

    strength: float = param(0.5, 0.0, 1.0, step=0.05, label="Strength (0 = your image, 1 = a new image)",
                            help="how much of the image is redrawn: the fraction of the noise schedule run, from the "
                                 "image noised to that level; 0 returns it through the VAE, 1 keeps nothing of it "
                                 "(text-to-image from the seed); the model family's: 0.5 for the Turbo models (model "
                                 "cards), 0.75 for others (AUTOMATIC1111's default)")
    num_steps: int = param(2, 1, MAX_STEPS, label="Steps (of the full schedule)",
                           help="steps of the whole schedule, of which int(num_steps x strength) run; the model "
                                "family's: 2 for the Turbo models (model cards: one step at strength 0.5), 25 for "
                                "other Stable Diffusion models (ours)")
    guidance_scale: float = param(0.0, 0.0, MAX_GUIDANCE, step=0.5, label="Guidance scale (negative prompts need > 1)",
                                  help="classifier-free guidance; the model family's: 0 for the Turbo models (model "
                                       "cards), 7.5 for other Stable Diffusion models (diffusers' default)")
    num_images: int = param(1, 1, MAX_IMAGES, label="Images", help="images per request (seed + i each); 1 (ours)")
    batch_size: int = param(4, 1, MAX_BATCH, label="Batch size (images per forward pass)",
                            help="images per diffusers call (the images do not depend on it); 4 (ours)")
    seed: int = param(0, 0, SEED_MAX, label="Seed (image i uses seed + i)",
                      help="image i's noise comes from seed + i (mod 2**32), so each image reproduces alone")
    scheduler: str = param("default", choices=tuple(SCHEDULERS), label="Scheduler (multi-step models)",
                           help="'default' keeps the model's own; the others are diffusers' schedulers of those "
                                "names, configured from the model's")
    negative_prompts: str = param("", label="Negative prompts (one per line)",
                                  help=f"what the images should not show: texts one per line (or a list), at most "
                                       f"{MAX_NEGATIVES}, joined with ', ' for diffusers; needs guidance_scale > 1")

    @classmethod
    def for_model(cls, name: str | None = None) -> "Text2ImageImg2ImgConfig":
        """The settings a model (repo id or folder; None: the default model) starts with. Loads nothing."""
        return cls.from_preset(preset_for(name or DEFAULT_MODEL) or MULTI_STEP_PRESET)

    @classmethod
    def from_preset(cls, preset: ModelPreset) -> "Text2ImageImg2ImgConfig":
        steps, strength = ONE_STEP_IMG2IMG if preset.one_step else (preset.num_steps, MULTI_STEP_STRENGTH)
        return cls(strength=strength, num_steps=steps, guidance_scale=preset.guidance_scale)


@dataclass
class Img2ImgOutput(SeededImages):
    """Images made from `source` (the start image as used: resized only where `notice` says so), in seed order.

    `seeds[i]` and `clip_scores[i]` (CLIPScore against the prompt; empty without a scorer) belong to `images[i]`;
    scores: {"clip_score": the best}; `latents` (N, C, h, w) float32 CPU: the final latents, which `edit` takes."""

    task = "text2image-img2img"
    source: Image.Image | None = None
    seeds: list[int] = field(default_factory=list)
    clip_scores: list[float] = field(default_factory=list)
    prompt: str = ""
    model: str = ""
    clip_model: str | None = None
    latents: torch.Tensor | None = None


def steps_run(num_steps: int, strength: float) -> int:
    """The denoising steps diffusers' img2img runs: int(num_steps x strength) of the schedule's last ones."""
    return min(int(num_steps * strength), num_steps)


class Text2ImageImg2ImgPipeline(SessionTask):
    """img2img on a Text to Image session: the `text2image-img2img` task.

    Built like every Text to Image task: from a diffusers pipeline or a session, `from_pretrained(...)`, or
    `from_pipe(other_task)`. `config` holds the settings each call starts from (the model family's).

    >>> i2i = Text2ImageImg2ImgPipeline.from_pretrained("stabilityai/sd-turbo")  # doctest: +SKIP
    >>> out = i2i("photo.png", "a watercolor painting", strength=0.5)  # doctest: +SKIP
    """

    def make_config(self, session: Text2ImageSession) -> Any:
        return Text2ImageImg2ImgConfig.from_preset(session.preset)

    def __call__(self, image: Any, prompt: str, *, callback: Callable | None = None, **settings: Any) -> Img2ImgOutput:
        return drain(self.iter_img2img(image, prompt, **settings), callback)

    def check_inputs(self, image: Any, prompt: Any, settings: dict[str, Any]
                     ) -> tuple[Image.Image, str | None, str, Text2ImageImg2ImgConfig]:
        """The start image (and a note when it was resized), the prompt and the resolved config; ValueError naming
        the argument and the value."""
        prompt = check_text(prompt, "prompt")
        settings = dict(settings)
        if "negative_prompts" in settings:  # None, lines or a list -> one text per line
            settings["negative_prompts"] = "\n".join(check_texts(settings["negative_prompts"], "negative_prompts",
                                                                 MAX_NEGATIVES))
        cfg = resolve(self.config, settings)
        if cfg.negative_prompts and cfg.guidance_scale <= 1.0:
            raise ValueError(f"`negative_prompts` have no effect unless `guidance_scale` > 1 (classifier-free "
                             f"guidance), got guidance_scale={cfg.guidance_scale} with "
                             f"negative_prompts={cfg.negative_prompts!r}")
        if 0 < cfg.strength < 1 and steps_run(cfg.num_steps, cfg.strength) < 1:
            raise ValueError(f"`strength` x `num_steps` must make at least one denoising step (diffusers runs "
                             f"int(num_steps x strength)), got strength={cfg.strength} with num_steps={cfg.num_steps}")
        start, notice = load_start_image(image, "image")
        return start, notice, prompt, cfg

    def iter_img2img(self, image: Any, prompt: str, **settings: Any) -> Iterator[Progress | Img2ImgOutput]:
        """Yield a `Progress` per denoising step, then the `Img2ImgOutput` (see the module docstring).

        `image`: a PIL image, a path, bytes or an array (read and bounded as every upload); settings: any
        `Text2ImageImg2ImgConfig` field. Image i uses seed `seed + i`."""
        t_start = time.perf_counter()
        # 1. check inputs
        start, notice, prompt, cfg = self.check_inputs(image, prompt, settings)
        session = self.session
        negative = ", ".join(check_texts(cfg.negative_prompts, "negative_prompts", MAX_NEGATIVES)) or None
        n = cfg.num_images
        seeds = [(cfg.seed + i) % 2**32 for i in range(n)]
        width, height = start.size

        # 2. encode the image once: (1, C, h, w)
        t0 = time.perf_counter()
        with session.lock, torch.no_grad(), oom_guard(f"encoding of the {width}x{height} image"):
            session.set_tiling(height, width)
            z = session.encode(image_tensor([start]))
        encode_s = time.perf_counter() - t0

        # 3. denoise in batches (strength 0: the VAE round trip; 1: text-to-image from the seed's noise)
        if cfg.strength == 0:
            with session.lock, torch.no_grad(), oom_guard(f"decoding of the {width}x{height} image"):
                decoded = session.decode(z)  # (1, 3, H, W)
                scores = session.score(decoded, prompt) * n if session.scorer is not None else []
            images = [to_pil(decoded[0])] * n
            latents = [z.float().cpu().expand(n, -1, -1, -1).clone()]
            timings = {"generate_s": time.perf_counter() - t0 - encode_s, "score_s": 0.0}
            stopped, done_steps = (yield Progress(1, 1, images[0], {"batch_step": 1, "batch_steps": 1},
                                                  f"image 1 of {n}")) == "stop", 1
        else:
            noise, generators = session.noise(seeds, height, width)  # (N, C, h, w)
            calls = []
            for first in range(0, n, cfg.batch_size):
                b = len(seeds[first:first + cfg.batch_size])
                call = dict(prompt=[prompt] * b, negative_prompt=[negative] * b if negative else None,
                            num_inference_steps=cfg.num_steps, guidance_scale=cfg.guidance_scale,
                            generator=generators[first:first + b], output_type="pt")
                if cfg.strength == 1:  # text-to-image: the seed's noise, at the image's size
                    call.update(latents=noise[first:first + b].to(session.device, session.dtype), width=width,
                                height=height)
                else:  # diffusers encodes the image and draws each image's noise from its generator (the
                    # picture, not our latent: its pipeline takes only 4-channel latents as images)
                    call.update(image=[start] * b, strength=cfg.strength)
                calls.append(call)
            if cfg.strength == 1:
                pipe, steps = session.pipe, cfg.num_steps
            else:
                pipe, steps = session.variant("image2image"), steps_run(cfg.num_steps, cfg.strength)
            done = yield from session.iterate_calls(calls, steps, cfg.scheduler, "img2img", prompt, (width, height),
                                                    pipe=pipe)
            images, scores, latents, timings = done.images, done.scores, done.latents, done.timings
            stopped, done_steps = done.stopped, done.steps_run

        # 4. package the result
        timings.update(encode_s=encode_s, total_s=time.perf_counter() - t_start)
        kept = seeds[:len(images)]
        yield Img2ImgOutput(
            images=images, source=start, seeds=kept, clip_scores=scores,
            scores={"clip_score": max(scores)} if scores else {}, seed=kept[0] if kept else cfg.seed,
            settings=run_settings(cfg, prompt=prompt), prompt=prompt, model=session.model_name,
            clip_model=session.clip_name, latents=torch.cat(latents) if latents else z[:0].cpu(),
            stopped=stopped, steps_run=done_steps, timings=timings,
            notice="\n".join(x for x in (notice, getattr(session.scorer, "notice", None)) if x) or None)


register(Task(
    name="text2image-img2img", title="Image → image (diffusers img2img)", config=Text2ImageImg2ImgConfig,
    pipeline=Text2ImageImg2ImgPipeline, method="iter_img2img", models=("t2i", "clip"),
    load=lambda **models: Text2ImageImg2ImgPipeline(load_session(**models)),
    inputs=(Input("image", "image", help="the picture to start from"),
            Input("prompt", "text", help="what the new image shows"))))
