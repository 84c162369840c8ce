"""Text to Image refine: ReNO noise optimisation of a one-step sample for CLIPScore.

Follows Eyring et al., NeurIPS 2024, "ReNO: Enhancing One-step Text-to-Image Models through Reward-based Noise
Optimization": gradient ascent on the initial noise of a one-step model with the CLIP reward, plus the negative
log-likelihood of the noise norm under its chi distribution so that the noise stays a plausible sample; SGD with
Nesterov momentum, gradient-norm clipping and best-iterate selection as in the authors' code.

On the run protocol: `Text2ImageRefinePipeline.iter_refine(prompt, **settings)` yields a `Progress` after each
update (step 1 to num_steps, the CLIPScore of that iterate in `metrics`) and ends with the `RefineOutput`: the best
iterate seen, so a stop returns the best so far. Settings: `Text2ImageRefineConfig`; the task is registered as
`text2image-refine`, on the Text to Image session (`pipelines/text2image_core.py`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from pipelines.registry import register
from pipelines.text2image_core import SessionTask, Text2ImageSession, image_tensor, load_session, load_start_image
from pipelines.text2image_models import CHECKPOINTING, DEFAULT_MODEL, DEFAULT_SIDE, MAX_SIDE, check_size, thin_frames
from studio.images import to_pil, to_uint8
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings


@dataclass
class Text2ImageRefineConfig:
    """Settings of one ReNO refine: defaults (with where they come from) and limits."""

    num_steps: int = param(20, 1, 200, ui=(1, 50), label="Refine steps",
                           help="noise updates; ReNO's own runs take 50, 20 keeps a run short and gets most of "
                                "the gain")
    reg_weight: float = param(0.01, 0.0, 1.0, ui=(0.0, 0.1), step=0.005, label="Noise-norm regulariser weight",
                              help="weight of the chi-distribution NLL of the noise norm; ReNO arguments.py: 0.01")
    lr: float = param(5.0, 0.001, 100.0, control=False, help="SGD learning rate on the noise; ReNO arguments.py: 5")
    momentum: float = param(0.9, 0.0, 0.99, control=False,
                            help="SGD momentum (Nesterov when > 0); ReNO training/optim.py: 0.9")
    grad_clip: float = param(0.1, 0.001, 100.0, control=False,
                             help="the noise gradient's norm is clipped to this; ReNO arguments.py: 0.1")
    clip_weight: float = param(0.01, 0.0, 10.0, control=False,
                               help="weight of the CLIP reward loss 100 - 100 cos; ReNO's CLIP weighting: 0.01")
    seed: int = param(0, 0, SEED_MAX, control=False,
                      help="the noise to start from: the same seed as the generated image refines that image")
    strength: float = param(0.5, 0.01, 1.0, step=0.05, control=False,
                            help="with a start image: the noise level it is refined from (its latent noised to "
                                 "timestep round(strength x 1000) - 1, then denoised in one step); 0.5 as SD-Turbo's "
                                 "img2img (model card); not used without an image")
    width: int = param(DEFAULT_SIDE, 16, MAX_SIDE, step=8, control=False,
                       help="the generated image's width; a pipeline starts at its model's size")
    height: int = param(DEFAULT_SIDE, 16, MAX_SIDE, step=8, control=False,
                        help="the generated image's height; a pipeline starts at its model's size")
    preview_every: int = param(1, 1, 1000, control=False, help="updates between previews and video frames")
    gradient_checkpointing: str = param("auto", choices=CHECKPOINTING, control=False,
                                        help="'auto': on GPUs only (it saves activation memory and costs time)")


@dataclass
class RefineOutput(Result):
    """A ReNO run: `image` is the best iterate by CLIPScore (scores: clip_score, clip_score_before of the start),
    `start_image` the generated image it began from, `clip_scores` the CLIPScore of every iterate (the start
    first), `noise` and `latents` (1, C, h, w) float32 CPU of the best iterate (the latent feeds `edit`)."""

    task = "text2image-refine"
    start_image: Image.Image | None = None
    clip_scores: list[float] = field(default_factory=list)
    best_step: int = 0
    prompt: str = ""
    model: str = ""
    clip_model: str | None = None
    noise: torch.Tensor | None = None
    latents: torch.Tensor | None = None

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "best_step": self.best_step, "model": self.model,
                "clip_model": self.clip_model}


def chi_norm_nll(norm: torch.Tensor, d: int) -> torch.Tensor:
    """Negative log-likelihood (up to a constant) of a norm r = ||eps|| of d-dimensional standard normal noise.

    r follows a chi distribution with d degrees of freedom, p(r) ~ r^(d-1) exp(-r^2 / 2), so
    -log p(r) = r^2 / 2 - (d - 1) log r, smallest at r = sqrt(d - 1): ReNO's regulariser (Eyring et al. 2024, eq. 4).
    """
    return 0.5 * norm**2 - (d - 1) * torch.log(norm)


def one_step_x0(session: Text2ImageSession, noise: torch.Tensor, embeds: torch.Tensor,
                timestep: int | None = None) -> torch.Tensor:
    """Denoised latent of a one-step sample: the x0-prediction at the first timestep of a 1-step schedule (or at
    `timestep`, where `noise` is then the noised latent x_t of a start image: `noised_start`).

    With unit-variance `noise` as x_t, x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (epsilon models) or
    sqrt(a_t) x_t - sqrt(1 - a_t) v (v models). This equals what diffusers' 1-step sampling returns (e.g. Euler:
    sample = noise * sqrt(sigma^2 + 1), x0 = sample - sigma * eps), so refine starts from the generated image.
    """
    scheduler = session.pipe.scheduler
    if timestep is None:
        scheduler.set_timesteps(1, device=noise.device)
        t = scheduler.timesteps[0]
    else:
        t = torch.tensor(timestep, device=noise.device)
    a = scheduler.alphas_cumprod[int(t)].to(noise.device, torch.float32)
    out = session.pipe.unet(noise.to(embeds.dtype), t, encoder_hidden_states=embeds).sample.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noise - (1 - a).sqrt() * out) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * out
    if kind == "sample":
        return out
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported by refine")


def start_timestep(session: Text2ImageSession, strength: float) -> int:
    """The timestep a start image is noised to for `strength`: round(strength x T) - 1 of the T training steps (0.5 on
    a 1000-step model: 499, where SD-Turbo's img2img with 2 steps at strength 0.5 denoises)."""
    steps = int(session.pipe.scheduler.config.num_train_timesteps)
    return max(0, min(steps - 1, round(strength * steps) - 1))


def noised_start(session: Text2ImageSession, z: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
    """x_t = sqrt(a_t) z + sqrt(1 - a_t) noise: the start image's latent `z` noised to `timestep` (DDPM forward)."""
    a = session.pipe.scheduler.alphas_cumprod[timestep].to(noise.device, torch.float32)
    return a.sqrt() * z + (1 - a).sqrt() * noise


class Text2ImageRefinePipeline(SessionTask):
    """ReNO refine on a Text to Image session: the `text2image-refine` task.

    Built like every Text to Image task: from a diffusers pipeline or a session, `from_pretrained(...)`, or
    `from_pipe(other_task)`. `config` holds the settings each call starts from (the model's image size)."""

    def make_config(self, session: Text2ImageSession) -> Any:
        return Text2ImageRefineConfig(width=session.default_size, height=session.default_size)

    def __call__(self, prompt: str, *, callback: Callable | None = None, **settings: Any) -> RefineOutput:
        return drain(self.iter_refine(prompt, **settings), callback)

    def iter_refine(self, prompt: str, image: Any = None, **settings: Any) -> Iterator[Progress | RefineOutput]:
        """ReNO on one image: start from the noise `seed` gives, take `num_steps` SGD steps on
        loss = clip_weight * (100 - 100 cos(E_I(G(eps)), E_T(prompt)))
               + reg_weight * (||eps||^2 / 2 - (d - 1) log ||eps||),
        the second term being the chi-distribution negative log-likelihood of the noise norm (ReNO, sec. 3). Every
        iterate is scored; the best by CLIPScore is returned (the start included).

        With a start `image` (a photo: PIL, path, bytes or array, read and bounded as every upload), G(eps) is the
        one-step denoise of its VAE latent noised with eps to the level `strength` names (`noised_start`), at the
        image's size (which the result's settings record as width and height)."""
        t_start = time.perf_counter()
        # 1. check inputs
        session = self.session
        prompt = check_text(prompt, "prompt")
        cfg = resolve(self.config, settings)
        photo, resized = load_start_image(image, "image") if image is not None else (None, None)
        if photo is not None:
            cfg = dataclasses.replace(cfg, width=photo.size[0], height=photo.size[1])
        check_size(cfg.width, cfg.height)
        if not session.preset.one_step:
            raise ValueError(f"refine needs a one-step model (e.g. {DEFAULT_MODEL}); {session.model_name!r} is set "
                             f"up for {session.preset.num_steps} steps (pass one_step=True to from_pretrained to "
                             f"override)")
        session.require_scorer("refine")
        session.require_differentiable("refine")
        scorer, total, every = session.scorer, cfg.num_steps, cfg.preview_every
        width, height = cfg.width, cfg.height

        # 2. initialise the noise and the prompt embeddings
        with session.lock:
            session.set_scheduler("default")
            session.set_tiling(height, width)
            session.set_checkpointing([session.pipe.unet, session.pipe.vae], cfg.gradient_checkpointing)
            noise = session.noise([cfg.seed], height, width)[0].to(session.device)  # (1, C, h, w) float32
            noise.requires_grad_(True)
            d = noise[0].numel()
            with torch.no_grad():
                embeds = session.embed_prompt(prompt)
                text = scorer.encode_text([prompt]).to(scorer.device)  # (1, D)
                z = session.encode(image_tensor([photo])) if photo is not None else None  # (1, C, h, w)
        timestep = start_timestep(session, cfg.strength) if photo is not None else None

        def start_latent(eps: torch.Tensor) -> torch.Tensor:
            """What the one-step model denoises: the noise itself, or the start image noised with it."""
            return eps if z is None else noised_start(session, z, eps, timestep)
        optimizer = torch.optim.SGD([noise], lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)

        def evaluate(update: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
            """CLIPScore, image (1, 3, H, W) and x0 latent of the current noise; with `update`, its gradient too."""
            with session.lock, oom_guard(f"refinement at {width}x{height}"), torch.set_grad_enabled(update):
                x0 = one_step_x0(session, start_latent(noise), embeds, timestep)
                image = session.decode(x0)
                cos = (scorer.encode_image(image.to(scorer.device)) * text).sum(-1)  # (1,)
                score = float(100.0 * cos.clamp(min=0).item())
                if update:
                    reward_loss = (100.0 - 100.0 * cos).mean() * cfg.clip_weight
                    reg = cfg.reg_weight * chi_norm_nll(noise.flatten().norm(), d)
                    (noise.grad,) = torch.autograd.grad(reward_loss + reg, [noise])
                    torch.nn.utils.clip_grad_norm_([noise], cfg.grad_clip)
            return score, image.detach(), x0.detach()

        def step_noise() -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # 3. optimise: score the start, then after every update; keep the best iterate (its noise before it moves on)
        t0 = time.perf_counter()
        score, image, x0 = evaluate(True)
        start = to_pil(image)
        clip_scores, frames = [score], [to_uint8(image)]
        best = (score, 0, start, noise.detach().float().cpu().clone(), x0.float().cpu())
        step_noise()
        stopped, step = False, 0
        for step in range(1, total + 1):
            score, image, x0 = evaluate(step < total)
            clip_scores.append(score)
            pil = None
            if score > best[0]:
                pil = to_pil(image)
                best = (score, step, pil, noise.detach().float().cpu().clone(), x0.float().cpu())
            if step < total:
                step_noise()
            preview = None
            if step % every == 0 or step == total:
                preview = pil or to_pil(image)
                frames.append(to_uint8(preview))
            if (yield Progress(step, total, preview, {"clip_score": score, "best_clip_score": best[0]})) == "stop":
                stopped = True
                break
        refine_s = time.perf_counter() - t0

        # 4. package the best iterate
        best_score, best_step, best_image, best_noise, best_latent = best
        yield RefineOutput(
            image=best_image, start_image=start, clip_scores=clip_scores, best_step=best_step, prompt=prompt,
            model=session.model_name, clip_model=session.clip_name, noise=best_noise, latents=best_latent,
            frames=thin_frames(frames), scores={"clip_score": best_score, "clip_score_before": clip_scores[0]},
            seed=cfg.seed, settings=run_settings(cfg, prompt=prompt), stopped=stopped, steps_run=step,
            timings={"refine_s": refine_s, "per_step_s": refine_s / (step + 1),  # step + 1 iterates were scored
                     "total_s": time.perf_counter() - t_start},
            notice="\n".join(x for x in (resized, getattr(scorer, "notice", None)) if x) or None)


register(Task(
    name="text2image-refine", title="Text → image: CLIP refine (ReNO)", config=Text2ImageRefineConfig,
    pipeline=Text2ImageRefinePipeline, method="iter_refine", models=("t2i", "clip"),
    load=lambda **models: Text2ImageRefinePipeline(load_session(**models)),
    inputs=(Input("prompt", "text", help="the prompt of the image to refine (its seed and size are settings)"),
            Input("image", "image", required=False,
                  help="a start image (a photo) to refine instead of a generated one; its size is used"))))
