"""Text to Image edit: move a generated image's latent toward another text with the directional CLIP loss.

The directional loss of StyleGAN-NADA (Gal et al. 2022, eq. 3: the image-embedding change should point along the
text-embedding change) applied to the kept output latent z0 of a generation, plus a pull toward z0 weighted by
`proximity`:

    loss(z) = 1 - cos(E_I(D(z)) - E_I(D(z0)), E_T(edit) - E_T(source)) + proximity * mean((z - z0)^2)

optimised with Adam. The result is z0 + strength * (z* - z0), z* being the iterate of lowest loss: `strength` is
the fraction of the optimised move applied (0: the original, 1: the full edit), as everywhere in the studio.

On the run protocol: `Text2ImageEditPipeline.iter_edit(latents, source_prompt, edit_prompt, **settings)` yields a
`Progress` after each update (step 1 to num_steps; metrics: directional, loss) and ends with the `EditOutput`; a
stop returns the best iterate so far. Settings: `Text2ImageEditConfig`; the task is registered as `text2image-edit`,
on the Text to Image session (`pipelines/text2image_core.py`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from pipelines.text2image_core import SessionTask, Text2ImageSession, image_tensor, load_session, load_start_image
from pipelines.text2image_models import CHECKPOINTING, MAX_SIDE, thin_frames
from studio.images import to_pil, to_uint8
from studio.progress import Progress, Result, json_safe
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve


@dataclass
class Text2ImageEditConfig:
    """Settings of one directional-CLIP edit: defaults (with where they come from) and limits."""

    strength: float = param(1.0, 0.0, 1.0, step=0.05, label="Strength (0 = the original, 1 = the full edit)",
                            help="the fraction of the optimised move applied: z0 + strength * (z - z0)")
    proximity: float = param(1.0, 0.0, 100.0, ui=(0.0, 5.0), step=0.1, label="Pull toward the original",
                             help="weight of mean((z - z0)^2) in the loss; 1.0, the weight the studio's earlier "
                                  "default (strength 0.5) gave")
    num_steps: int = param(20, 1, 200, ui=(1, 50), label="Edit steps", help="Adam updates of the latent; ours")
    lr: float = param(0.05, 0.0001, 10.0, control=False,
                      help="Adam's learning rate on SD latents (unit scale); StyleCLIP's latent optimisation uses "
                           "Adam 0.1 on w")
    seed: int = param(0, 0, SEED_MAX, control=False,
                      help="unused: the edit draws nothing at random (every task takes a seed)")
    preview_every: int = param(1, 1, 1000, control=False, help="updates between previews and video frames")
    gradient_checkpointing: str = param("auto", choices=CHECKPOINTING, control=False,
                                        help="'auto': on GPUs only (it saves activation memory and costs time)")


@dataclass
class EditOutput(Result):
    """A directional-CLIP edit: `image` the edited image, `original` the one it started from; scores: directional
    (cos of the image-embedding change with the text change), clip_score (CLIPScore against the edit text),
    clip_score_before (the original's); `directional` per update; `latents` (1, C, h, w) float32 CPU, the edited
    latent (editable again)."""

    task = "text2image-edit"
    original: Image.Image | None = None
    source_prompt: str = ""
    edit_prompt: str = ""
    directional: list[float] = field(default_factory=list)
    best_step: int = 0
    latents: torch.Tensor | None = None
    model: str = ""
    clip_model: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "best_step": self.best_step, "model": self.model,
                "clip_model": self.clip_model}


def check_latents(latents: Any, channels: int, max_side: int | None = None) -> torch.Tensor:
    """A (C, h, w) or (1, C, h, w) latent with `channels` channels, as (1, C, h, w); else ValueError."""
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (3, 4) or (
            latents.ndim == 4 and latents.shape[0] != 1):
        raise ValueError(f"`latents` must be a (C, h, w) or (1, C, h, w) tensor, got "
                         f"{getattr(latents, 'shape', type(latents).__name__)}")
    if latents.shape[-3] != channels:
        raise ValueError(f"`latents` must have {channels} channels, got {latents.shape[-3]}")
    if max_side is not None and max(latents.shape[-2:]) > max_side:
        raise ValueError(f"`latents` must be at most {max_side} × {max_side} (the largest image the model makes), "
                         f"got {tuple(latents.shape[-2:])}")
    if not torch.isfinite(latents).all():
        raise ValueError("`latents` must hold finite numbers, got NaN or infinity")
    return latents.reshape(1, *latents.shape[-3:])


class Text2ImageEditPipeline(SessionTask):
    """Directional-CLIP edit on a Text to Image session: the `text2image-edit` task.

    Built like every Text to Image task: from a diffusers pipeline or a session, `from_pretrained(...)`, or
    `from_pipe(other_task)`. `config` holds the settings each call starts from."""

    def make_config(self, session: Text2ImageSession) -> Any:
        return Text2ImageEditConfig()

    def __call__(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str, *,
                 callback: Callable | None = None, **settings: Any) -> EditOutput:
        return drain(self.iter_edit(latents, source_prompt, edit_prompt, **settings), callback)

    def iter_edit(self, latents: torch.Tensor, source_prompt: str, edit_prompt: str,
                  **settings: Any) -> Iterator[Progress | EditOutput]:
        """Optimise z from z0 = `latents` toward `edit_prompt` (see the module docstring); yields progress after each
        update, then the `EditOutput`. `latents`: a generated image's denoised latent (C, h, w) or (1, C, h, w), or
        an image (a photo: PIL, path, bytes or array, read and bounded as every upload), whose VAE encoding is then
        z0."""
        t_start = time.perf_counter()
        session = self.session
        # 1. check inputs
        photo, resized = None, None
        if isinstance(latents, torch.Tensor):
            z0 = check_latents(latents, session.latent_channels, MAX_SIDE // session.vae_scale_factor)
        else:  # an image: edited from its VAE encoding (below, once every input is checked)
            photo, resized = load_start_image(latents, "latents")
        source = check_text(source_prompt, "source_prompt")
        edit = check_text(edit_prompt, "edit_prompt")
        if source == edit:
            raise ValueError(f"`edit_prompt` must differ from `source_prompt`, got {edit_prompt!r} for both")
        cfg = resolve(self.config, settings)
        session.require_scorer("edit")
        session.require_differentiable("edit")  # SDXL's VAE overflows in fp16 unless upcast, which _decode does not do
        scorer, total, every = session.scorer, cfg.num_steps, cfg.preview_every

        # 2. embed the texts and the original image
        if photo is not None:
            with session.lock, torch.no_grad(), oom_guard("encoding of the image to edit"):
                session.set_tiling(photo.size[1], photo.size[0])
                z0 = session.encode(image_tensor([photo]))  # (1, C, h, w)
        z0 = z0.to(session.device, torch.float32)
        h, w = (s * session.vae_scale_factor for s in z0.shape[-2:])
        with session.lock, torch.no_grad(), oom_guard("encoding of the image to edit"):
            session.set_tiling(h, w)
            session.set_checkpointing([session.pipe.vae], cfg.gradient_checkpointing)
            t = scorer.encode_text([source, edit]).to(scorer.device)  # (2, D)
            text_dir = F.normalize(t[1] - t[0], dim=-1)  # (D,)
            original = session.decode(z0)
            e0 = scorer.encode_image(original.to(scorer.device))  # (1, D)
            before = float(100.0 * (e0 @ t[1]).clamp(min=0).item())
        z = z0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=cfg.lr)

        def directional(e: torch.Tensor) -> torch.Tensor:
            return F.cosine_similarity(e - e0, text_dir[None], dim=-1, eps=1e-8).mean()

        def evaluate(update: bool, first: bool = False) -> tuple[float, float, torch.Tensor, torch.Tensor]:
            """Loss, directional score, image (1, 3, H, W) and embedding of the current z; with `update`, the gradient.

            `first`: z is z0, where the image-embedding change is zero and the cosine has no usable gradient (it is
            scale-free; torch's eps makes it ~1e8 large, which would then rule Adam's moments for the whole run). The
            first step follows the projection of the change onto the text direction instead, the direction in which
            the cosine starts to grow."""
            with session.lock, oom_guard(f"editing at {w}x{h}"), torch.set_grad_enabled(update):
                image = session.decode(z)
                e = scorer.encode_image(image.to(scorer.device))  # (1, D)
                cos_dir = directional(e)
                loss = 1.0 - cos_dir + cfg.proximity * (z - z0).pow(2).mean()
                if update:
                    objective = -((e - e0) @ text_dir).mean() if first else loss
                    (z.grad,) = torch.autograd.grad(objective, [z])
            return float(loss.item()), float(cos_dir.item()), image.detach(), e.detach()

        def step_latent() -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # 3. optimise: every pass scores the current iterate, then (but for the last) steps; keep the lowest loss
        t0 = time.perf_counter()
        loss, _, image, e = evaluate(True, first=True)  # iterate 0, the original: it sets the first step's gradient
        best = (loss, 0, z.detach().clone(), image, e)
        step_latent()
        scores: list[float] = []  # directional score of iterates 1..num_steps
        frames = [to_uint8(original)]
        stopped, step = False, 0
        for step in range(1, total + 1):
            loss, cos_dir, image, e = evaluate(step < total)
            scores.append(cos_dir)
            if loss < best[0]:
                best = (loss, step, z.detach().clone(), image, e)
            if step < total:
                step_latent()
            preview = None
            if step % every == 0 or step == total:
                preview = to_pil(image)
                frames.append(to_uint8(preview))
            if (yield Progress(step, total, preview, {"directional": cos_dir, "loss": loss})) == "stop":
                stopped = True
                break
        edit_s = time.perf_counter() - t0

        # 4. apply `strength` of the best move and package it
        _, best_step, z_best, image, e = best
        z_out = z_best
        if cfg.strength != 1.0:
            z_out = z0 + cfg.strength * (z_best - z0)
            with session.lock, torch.no_grad(), oom_guard(f"editing at {w}x{h}"):
                image = session.decode(z_out)
                e = scorer.encode_image(image.to(scorer.device))
        with torch.no_grad():
            result_dir = float(directional(e).item())
            after = float(100.0 * (e @ t[1]).clamp(min=0).item())
        yield EditOutput(
            image=to_pil(image), original=to_pil(original), source_prompt=source, edit_prompt=edit, directional=scores,
            best_step=best_step, latents=z_out.float().cpu(), model=session.model_name, clip_model=session.clip_name,
            frames=thin_frames(frames),
            scores={"directional": result_dir, "clip_score": after, "clip_score_before": before},
            seed=cfg.seed, settings={"source_prompt": source, "edit_prompt": edit, **json_safe(asdict(cfg))},
            stopped=stopped, steps_run=step, timings={"edit_s": edit_s, "per_step_s": edit_s / (step + 1),
                                                      "total_s": time.perf_counter() - t_start},
            notice="\n".join(x for x in (resized, getattr(scorer, "notice", None)) if x) or None)


register(Task(
    name="text2image-edit", title="Text → image: CLIP edit (directional)", config=Text2ImageEditConfig,
    pipeline=Text2ImageEditPipeline, method="iter_edit", models=("t2i", "clip"),
    load=lambda **models: Text2ImageEditPipeline(load_session(**models)),
    inputs=(Input("latents", "state", help="a generated image's latent (`Text2ImageOutput.latents[i]`), or an image "
                  "(a photo: edited from its VAE encoding)"),
            Input("source_prompt", "text", help="the prompt it was made from"),
            Input("edit_prompt", "text", help="the text to move it toward"))))
