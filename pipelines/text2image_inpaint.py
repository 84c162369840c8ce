"""Text to Image inpainting and outpainting: repaint the masked part of your picture, or extend its canvas.

An inpainting model (a UNet with 9 input channels, which sees the mask and the masked image) runs diffusers'
inpainting pipeline (`AutoPipelineForInpainting.from_pipe`: the loaded components, no second copy of the weights);
any other text-to-image model, whatever its latent channels, is inpainted by latent blending on diffusers'
image-to-image pipeline (after every step the latent outside the mask is the image's own, noised to the level the
next step starts from: Avrahami et al. 2023, "Blended Latent Diffusion"; diffusers' inpainting pipeline does the
same for 4-channel UNets only). Then, as AUTOMATIC1111 does and diffusers does not by default, the result is
composited onto the input in pixels: **every pixel outside the mask is the input's, exactly** (the VAE round trip
does not touch it).
`mask_blur` feathers that composite inside the mask's edge only.

- Mask: white (>= 128) repaints, black keeps; a mask with transparency (a painted layer) repaints where it is
  opaque. It must have the image's size.
- `padding` (AUTOMATIC1111's "only masked" padding): 0 inpaints at the whole picture's scale; above 0 only the
  mask's bounding box grown by `padding` pixels is inpainted, scaled up to the picture's size (more detail in a
  small area), then scaled back and composited.
- Outpainting: `outpaint_left/right/top/bottom` extend the canvas by that many pixels (multiples of 8); the new
  area (filled with the nearest edge pixels before noising) joins the mask, so an outpaint needs no mask.

On the run protocol: `Text2ImageInpaintPipeline.iter_inpaint(image, prompt, mask=None, **settings)` yields a
`Progress` per denoising step of every batch (as `text2image` does) and ends with the `InpaintOutput`; "stop" keeps
the finished batches. Settings: `Text2ImageInpaintConfig` (`for_model(name)`: a model family's); the task is
registered as `text2image-inpaint`, on the Text to Image session (`pipelines/text2image_core.py`).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, UnidentifiedImageError

from pipelines.registry import register
from pipelines.text2image_core import SeededImages, SessionTask, Text2ImageSession, image_tensor, load_session
from pipelines.text2image_models import (
    DEFAULT_MODEL,
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_NEGATIVES,
    MAX_SIDE,
    MAX_STEPS,
    MULTI_STEP_PRESET,
    SCHEDULERS,
    ModelPreset,
    preset_for,
)
from studio.images import MAX_PIXELS, load_image
from studio.progress import Progress
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, check_texts, param, resolve, run_settings

SIDES = ("left", "right", "top", "bottom")


@dataclass
class Text2ImageInpaintConfig:
    """Settings of one inpainting (or outpainting) request. The class defaults are SD-Turbo's (the default model);
    `for_model(name)` gives a model family's without loading it."""

    strength: float = param(1.0, 0.0, 1.0, step=0.05, label="Strength (1 = repaint from noise)",
                            help="how much of the masked area is redrawn: the fraction of the noise schedule run, "
                                 "from the masked area noised to that level; 1 (diffusers' default) starts it from "
                                 "pure noise, lower keeps more of what is there")
    num_steps: int = param(1, 1, MAX_STEPS, label="Steps (of the full schedule)",
                           help="steps of the whole schedule, of which int(num_steps x strength) run; the model "
                                "family's: 1 for the Turbo models (model cards), 25 for other Stable Diffusion models "
                                "(ours)")
    guidance_scale: float = param(0.0, 0.0, MAX_GUIDANCE, step=0.5, label="Guidance scale (negative prompts need > 1)",
                                  help="classifier-free guidance; the model family's: 0 for the Turbo models (model "
                                       "cards), 7.5 for other Stable Diffusion models (diffusers' default)")
    mask_blur: int = param(4, 0, 64, label="Mask blur (pixels, inside the mask)",
                           help="feathers the final composite over this many pixels inside the mask's edge (never "
                                "outside it: pixels outside the mask stay the input's); AUTOMATIC1111's default 4")
    padding: int = param(0, 0, 512, step=8, label="Only masked: padding (0 = whole picture)",
                         help="0 inpaints at the whole picture's scale; above 0 only the mask's bounding box grown "
                              "by this many pixels is inpainted, scaled up to the picture's size (AUTOMATIC1111's "
                              "'only masked' padding, whose default is 32)")
    outpaint_left: int = param(0, 0, MAX_SIDE, step=8, label="Outpaint left (pixels)",
                               help="extend the canvas on the left by this many pixels (a multiple of 8), filled by "
                                    "the model")
    outpaint_right: int = param(0, 0, MAX_SIDE, step=8, label="Outpaint right (pixels)",
                                help="extend the canvas on the right (a multiple of 8)")
    outpaint_top: int = param(0, 0, MAX_SIDE, step=8, label="Outpaint top (pixels)",
                              help="extend the canvas at the top (a multiple of 8)")
    outpaint_bottom: int = param(0, 0, MAX_SIDE, step=8, label="Outpaint bottom (pixels)",
                                 help="extend the canvas at the bottom (a multiple of 8)")
    num_images: int = param(1, 1, MAX_IMAGES, label="Images", help="images per request (seed + i each); 1 (ours)")
    batch_size: int = param(4, 1, MAX_BATCH, label="Batch size (images per forward pass)",
                            help="images per diffusers call (the images do not depend on it); 4 (ours)")
    seed: int = param(0, 0, SEED_MAX, label="Seed (image i uses seed + i)",
                      help="image i's noise comes from seed + i (mod 2**32), so each image reproduces alone")
    scheduler: str = param("default", choices=tuple(SCHEDULERS), label="Scheduler (multi-step models)",
                           help="'default' keeps the model's own; the others are diffusers' schedulers of those "
                                "names, configured from the model's")
    negative_prompts: str = param("", label="Negative prompts (one per line)",
                                  help=f"what the masked area should not show: texts one per line (or a list), "
                                       f"at most {MAX_NEGATIVES}, joined with ', ' for diffusers; needs "
                                       f"guidance_scale > 1")

    @classmethod
    def for_model(cls, name: str | None = None) -> "Text2ImageInpaintConfig":
        """The settings a model (repo id or folder; None: the default model) starts with. Loads nothing."""
        return cls.from_preset(preset_for(name or DEFAULT_MODEL) or MULTI_STEP_PRESET)

    @classmethod
    def from_preset(cls, preset: ModelPreset) -> "Text2ImageInpaintConfig":
        return cls(num_steps=preset.num_steps, guidance_scale=preset.guidance_scale)


@dataclass
class InpaintOutput(SeededImages):
    """Inpainted (or outpainted) images in seed order, each composited onto `source` (the input on its final canvas,
    the outpainted area filled with edge pixels) with `alpha`: pixels where alpha is 0 (outside the mask) are
    `source`'s exactly. `mask`: the repainted area (L, 255 = repainted) on the canvas. `seeds[i]`, `clip_scores[i]`
    belong to `images[i]`. No latents: each image is a composite in pixels, which `edit` takes as an image (its VAE
    encoding)."""

    task = "text2image-inpaint"
    source: Image.Image | None = None
    mask: Image.Image | None = None
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    seeds: list[int] = field(default_factory=list)
    clip_scores: list[float] = field(default_factory=list)
    prompt: str = ""
    model: str = ""
    clip_model: str | None = None


def load_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """(H, W) bool, True where the image is repainted, from a PIL image, a path, bytes or an array (bool, 0/1 or
    0-255). Grey >= 128 repaints; an image with transparency repaints where it is opaque (alpha >= 128: a painted
    layer). Bounded like every upload before decoding; ValueError naming `name`."""
    if mask is None:
        raise ValueError(f"`{name}` is missing: paint or upload the area to repaint (or outpaint)")
    if isinstance(mask, np.ndarray):
        if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4):
            mask = mask[..., -1] if mask.shape[-1] == 4 else mask[..., 0]
        if mask.ndim != 2:
            raise ValueError(f"`{name}` array must be (H, W) or (H, W, C), got shape {mask.shape}")
        if mask.dtype == bool:
            return mask
        if not np.isfinite(mask).all():
            raise ValueError(f"`{name}` array holds NaN or infinite values")
        return mask >= (0.5 if mask.max(initial=0) <= 1 else 128)
    try:
        if isinstance(mask, Image.Image):
            img = mask
        elif isinstance(mask, (str, os.PathLike)):
            img = Image.open(mask)
        elif isinstance(mask, (bytes, bytearray)):
            img = Image.open(io.BytesIO(mask))
        else:
            raise ValueError(f"`{name}` must be a PIL image, a path, bytes or an array, got {type(mask).__name__}")
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise ValueError(f"`{name}` is {img.size[0]}×{img.size[1]} pixels; images above "
                             f"{MAX_PIXELS // 1_000_000} MP are refused")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"`{name}` could not be read as an image ({type(err).__name__}: {err})") from None
    if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return alpha >= 128
    return np.asarray(img.convert("L")) >= 128


def feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) float32 composite weights: 1 inside `mask`, 0 outside it, ramping up over about `radius` pixels inside
    the edge (the mask eroded by `radius`, blurred by `radius`, and cut at the mask)."""
    if radius == 0:
        return mask.astype(np.float32)
    keep = torch.from_numpy(~mask).float()[None, None]
    eroded = 1.0 - F.max_pool2d(keep, 2 * radius + 1, stride=1, padding=radius)[0, 0]  # (H, W)
    blurred = Image.fromarray((eroded.numpy() * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius / 2))
    return np.asarray(blurred, dtype=np.float32) / 255.0 * mask


def crop_box(mask: np.ndarray, padding: int, multiple: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the mask's bounding box grown by `padding`, within the canvas, its sides multiples of
    `multiple` (grown further where needed; the canvas's sides are multiples already)."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    box = [max(0, xs.min() - padding), max(0, ys.min() - padding), min(width, xs.max() + 1 + padding),
           min(height, ys.max() + 1 + padding)]
    for lo, hi, side in ((0, 2, width), (1, 3, height)):
        extra = -(box[hi] - box[lo]) % multiple
        box[hi] = min(side, box[hi] + extra)
        box[lo] = box[hi] - (-(-(box[hi] - box[lo]) // multiple) * multiple)
        if box[lo] < 0:
            box[lo], box[hi] = 0, min(side, box[hi] - box[lo])
    return box[0], box[1], box[2], box[3]


class Text2ImageInpaintPipeline(SessionTask):
    """Inpainting and outpainting on a Text to Image session: the `text2image-inpaint` task.

    Built like every Text to Image task: from a diffusers pipeline or a session, `from_pretrained(...)`, or
    `from_pipe(other_task)`. `config` holds the settings each call starts from (the model family's).

    >>> inpaint = Text2ImageInpaintPipeline.from_pretrained("stabilityai/sd-turbo")  # doctest: +SKIP
    >>> out = inpaint("room.png", "a red sofa", mask="sofa-mask.png")  # doctest: +SKIP
    >>> wider = inpaint("room.png", "a bright room", outpaint_left=128, outpaint_right=128)  # doctest: +SKIP
    """

    def make_config(self, session: Text2ImageSession) -> Any:
        return Text2ImageInpaintConfig.from_preset(session.preset)

    def __call__(self, image: Any, prompt: str, mask: Any = None, *, callback: Callable | None = None,
                 **settings: Any) -> InpaintOutput:
        return drain(self.iter_inpaint(image, prompt, mask, **settings), callback)

    def check_inputs(self, image: Any, prompt: Any, mask: Any, settings: dict[str, Any]
                     ) -> tuple[Image.Image, np.ndarray, str, Text2ImageInpaintConfig, list[str]]:
        """The canvas (the image, extended where outpainted), the mask on it, the prompt, the resolved config and
        notes on what was resized; ValueError naming the argument and the value, before any work."""
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
        if min(int(cfg.num_steps * cfg.strength), cfg.num_steps) < 1:
            raise ValueError(f"`strength` x `num_steps` must make at least one denoising step (diffusers runs "
                             f"int(num_steps x strength)), got strength={cfg.strength} with num_steps={cfg.num_steps}")
        multiple = 8  # the studio's rule for every image side (the VAE and the UNet halve it)
        pads = {side: getattr(cfg, f"outpaint_{side}") for side in SIDES}
        for side, value in pads.items():
            if value % multiple:
                raise ValueError(f"`outpaint_{side}` must be a multiple of {multiple}, got {value}")
        img = load_image(image, "image", max_side=MAX_PIXELS)  # bounded in pixels; resized below, saying so
        if mask is None and not any(pads.values()):
            raise ValueError("`mask` is missing: paint or upload the area to repaint, or outpaint (`outpaint_left`, "
                             "...)")
        keep_size = img.size
        m = np.zeros((img.size[1], img.size[0]), bool) if mask is None else load_mask(mask)
        if (m.shape[1], m.shape[0]) != keep_size:
            raise ValueError(f"`mask` must have the image's size, {keep_size[0]}×{keep_size[1]}, got "
                             f"{m.shape[1]}×{m.shape[0]}")
        if mask is not None and not m.any():
            raise ValueError("`mask` is empty: nothing would be repainted (white or opaque pixels mark the area)")
        notes = []
        w, h = img.size
        scale = min(1.0, MAX_SIDE / max(w, h))
        size = tuple(max(multiple, int(side * scale) // multiple * multiple) for side in (w, h))
        if size != (w, h):
            img = img.resize(size, Image.Resampling.LANCZOS)
            m = np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST))
            notes.append(f"`image` and `mask` were resized from {w}×{h} to {size[0]}×{size[1]} (sides must be "
                         f"multiples of {multiple}, at most {MAX_SIDE})")
        width, height = size[0] + pads["left"] + pads["right"], size[1] + pads["top"] + pads["bottom"]
        if max(width, height) > MAX_SIDE:
            raise ValueError(f"outpainting makes the canvas {width}×{height}, past the model's limit of {MAX_SIDE} a "
                             f"side; got outpaint_left={pads['left']}, outpaint_right={pads['right']}, "
                             f"outpaint_top={pads['top']}, outpaint_bottom={pads['bottom']} on a {size[0]}×{size[1]} "
                             f"image")
        if m.all() and not any(pads.values()):
            raise ValueError("`mask` covers the whole image: nothing of it would be kept (that is text-to-image; "
                             "use text2image, or img2img to keep its layout)")
        if any(pads.values()):
            spread = ((pads["top"], pads["bottom"]), (pads["left"], pads["right"]))
            img = Image.fromarray(np.pad(np.asarray(img), spread + ((0, 0),), mode="edge"))
            m = np.pad(m, spread, constant_values=True)
        return img, m, prompt, cfg, notes

    def iter_inpaint(self, image: Any, prompt: str, mask: Any = None,
                     **settings: Any) -> Iterator[Progress | InpaintOutput]:
        """Yield a `Progress` per denoising step, then the `InpaintOutput` (see the module docstring).

        `image`, `mask`: PIL images, paths, bytes or arrays (read and bounded as every upload); settings: any
        `Text2ImageInpaintConfig` field. Image i uses seed `seed + i`."""
        t_start = time.perf_counter()
        # 1. check inputs
        canvas, m, prompt, cfg, notes = self.check_inputs(image, prompt, mask, settings)
        session = self.session
        negative = ", ".join(check_texts(cfg.negative_prompts, "negative_prompts", MAX_NEGATIVES)) or None
        n = cfg.num_images
        seeds = [(cfg.seed + i) % 2**32 for i in range(n)]
        width, height = canvas.size
        alpha = feather(m, cfg.mask_blur)  # (H, W): 0 outside the mask
        source = image_tensor([canvas])[0]  # (3, H, W) in [0, 1]

        # 2. what the model sees: the whole canvas, or (padding > 0) the mask's box scaled up to the canvas's size
        box = crop_box(m, cfg.padding, 8) if cfg.padding else (0, 0, width, height)
        bw, bh = box[2] - box[0], box[3] - box[1]
        scale = min(max(width, height) / max(bw, bh), MAX_SIDE / max(bw, bh))
        work = (max(8, int(bw * scale) // 8 * 8), max(8, int(bh * scale) // 8 * 8)) if cfg.padding else (width, height)
        part = canvas.crop(box).resize(work, Image.Resampling.LANCZOS) if cfg.padding else canvas
        part_mask = Image.fromarray(m).crop(box).resize(work, Image.Resampling.NEAREST) if cfg.padding else \
            Image.fromarray(m)
        _, generators = session.noise(seeds, work[1], work[0])
        inpainting_model = session.latent_channels == 9  # a UNet that sees the mask and the masked image

        def composite(images: torch.Tensor, index: int) -> torch.Tensor:
            """(b, 3, h, w) generated in [0, 1] -> (b, 3, H, W) on the canvas: source outside the mask, exactly."""
            images = images.float().cpu()
            if cfg.padding:
                images = F.interpolate(images, size=(bh, bw), mode="bicubic", antialias=True).clamp(0, 1)
                full = source[None].repeat(len(images), 1, 1, 1)
                full[:, :, box[1]:box[3], box[0]:box[2]] = images
                images = full
            a = torch.from_numpy(alpha)[None, None]  # (1, 1, H, W)
            return torch.where(a > 0, source * (1 - a) + images * a, source)

        # 3. denoise in batches, each composited onto the source
        calls = []
        for first in range(0, n, cfg.batch_size):
            b = len(seeds[first:first + cfg.batch_size])
            call = dict(prompt=[prompt] * b, negative_prompt=[negative] * b if negative else None, image=[part] * b,
                        strength=cfg.strength, num_inference_steps=cfg.num_steps, guidance_scale=cfg.guidance_scale,
                        generator=generators[first:first + b], output_type="pt")
            if inpainting_model:
                call.update(mask_image=[part_mask.convert("L")] * b, width=work[0], height=work[1])
            calls.append(call)
        steps = min(int(cfg.num_steps * cfg.strength), cfg.num_steps)
        blend = None
        if not inpainting_model:  # any other model: diffusers' img2img with the known area blended in every step
            with session.lock, torch.no_grad(), oom_guard(f"encoding of the {work[0]}x{work[1]} image"):
                session.set_tiling(work[1], work[0])
                known = session.encode(image_tensor([part]))  # (1, C, h, w)
            keep_noise = session.noise(seeds, work[1], work[0])[0]  # (N, C, h, w): the known area's noise
            repaint = torch.from_numpy(np.asarray(part_mask) > 0).float()[None, None]
            repaint = F.adaptive_max_pool2d(repaint, known.shape[-2:])  # (1, 1, h, w): any masked pixel repaints

            def blend(index: int, pipe: Any, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
                """Blended Latent Diffusion's step: outside the mask, the image's latent noised to the level the
                next step starts from (diffusers' own inpainting does this for 4-channel UNets), clean after the
                last step."""
                first = index * cfg.batch_size
                z = known.to(latents.device, latents.dtype).expand(len(latents), -1, -1, -1)
                timesteps = pipe.scheduler.timesteps
                later = (timesteps == t).nonzero()
                k = int(later[0]) + 1 if len(later) else len(timesteps)
                if k < len(timesteps):
                    eps = keep_noise[first:first + len(latents)].to(latents.device, latents.dtype)
                    z = pipe.scheduler.add_noise(z, eps, timesteps[k:k + 1])
                m = repaint.to(latents.device, latents.dtype)
                return m * latents + (1 - m) * z

        done = yield from session.iterate_calls(
            calls, steps, cfg.scheduler, "inpainting", prompt, work,
            pipe=session.variant("inpainting" if inpainting_model else "image2image"), finish=composite, blend=blend)

        # 4. package the result (no latents: the final images are composites, which edit takes as images)
        timings = {**done.timings, "total_s": time.perf_counter() - t_start}
        kept = seeds[:len(done.images)]
        notice = "\n".join(notes + [getattr(session.scorer, "notice", None) or ""]).strip() or None
        yield InpaintOutput(
            images=done.images, source=canvas, mask=Image.fromarray(m.astype(np.uint8) * 255), alpha=alpha,
            seeds=kept, clip_scores=done.scores, scores={"clip_score": max(done.scores)} if done.scores else {},
            seed=kept[0] if kept else cfg.seed, settings=run_settings(cfg, prompt=prompt), prompt=prompt,
            model=session.model_name, clip_model=session.clip_name,
            stopped=done.stopped,
            steps_run=done.steps_run, timings=timings, notice=notice)


register(Task(
    name="text2image-inpaint", title="Image → image: inpaint / outpaint (diffusers)", config=Text2ImageInpaintConfig,
    pipeline=Text2ImageInpaintPipeline, method="iter_inpaint", models=("t2i", "clip"),
    load=lambda **models: Text2ImageInpaintPipeline(load_session(**models)),
    inputs=(Input("image", "image", help="the picture to repaint or extend"),
            Input("prompt", "text", help="what the repainted area shows"),
            Input("mask", "mask", required=False,
                  help="white (or opaque) where the image is repainted, its size; optional when outpainting"))))
