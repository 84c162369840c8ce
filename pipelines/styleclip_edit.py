"""StyleCLIP latent optimisation (task `styleclip-edit`; Patashnik et al., ICCV 2021, Sec. 4,
`optimization/run_optimization.py`), on a StyleCLIP session (pipelines/styleclip_core.py).

Adam with the ramped learning rate (`get_lr`: `lr_rampup`, then a cosine ramp-down over the last quarter), CLIP loss
1 - cos(E_I(G(w)), E_T(t)) on the area-pooled image, an L2 term on the distance to the start latent, and an identity
term. StyleCLIP's identity term is ArcFace, which only knows faces; here it is 1 - cos between the CLIP image
embeddings of the edit and of the start, so it works for any domain. The result is the lowest-loss latent seen, so
a Stop keeps it. An image start is inverted first (the session's `begin`, the "invert" stage).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.registry import register
from pipelines.styleclip_core import EditOutput, StartConfig, StyleCLIPTaskPipeline, cap_frames, get_lr
from studio.images import to_pil, to_uint8
from studio.progress import Progress
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import Input, Task, check_text, param, resolve, run_settings

# ----------------------------------------------------------------------------------------------------------------
# Settings and result
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EditConfig(StartConfig):
    """Settings of one latent optimisation; the defaults are StyleCLIP `run_optimization.py`'s except where marked
    ours."""

    num_steps: int = param(300, 1, 10_000, ui=(1, 1000), label="Steps (StyleCLIP: 300)",
                           help="optimisation steps; StyleCLIP --step 300")
    lr: float = param(0.1, 1e-6, 10.0, control=False,
                      help="Adam's peak learning rate, ramped up over the first `lr_rampup` of the steps and down "
                           "(cosine) over the last 25 %; StyleCLIP --lr 0.1")
    lr_rampup: float = param(0.05, 0.0, 1.0, control=False,
                             help="fraction of the steps over which the learning rate rises linearly to `lr`; "
                                  "StyleCLIP --lr_rampup 0.05")
    l2_weight: float = param(0.008, 0.0, 1e3, ui=(0.0, 0.1), step=0.001, label="L2 weight (stay near the start)",
                             help="weight of ||w - w0||^2; StyleCLIP --l2_lambda 0.008")
    id_weight: float = param(0.005, 0.0, 1e3, ui=(0.0, 1.0), step=0.005,
                             label="Identity weight (CLIP similarity to the start)",
                             help="weight of 1 - cos between the CLIP embeddings of the edit and the start: "
                                  "StyleCLIP --id_lambda 0.005, there on ArcFace's 1 - cos (faces only)")
    strength: float = param(1.0, 0.0, 2.0, step=0.05, label="Strength",
                            help="result = start + strength (optimised - start): 0 the start, 1 the optimised edit "
                                 "(StyleCLIP's result), above 1 an extrapolation; ours")
    preview_every: int = param(10, 1, 10_000, control=False,
                               help="steps between previews and video frames; ours: 10 (StyleCLIP saves every 20)")
    work_in_stylespace: bool = param(False, label="Optimise in StyleSpace",
                                     help="optimise the style vectors s = A(w) of every non-toRGB layer instead of "
                                          "the W+ latent, L2 on s; StyleCLIP --work_in_stylespace (default off)")



AUGMENTED_VIEWS = 16  # views of the held-out score (CLIPDraw's augmentations: perspective 0.5, crop 0.7-0.9)


def _augmented_score(session: Any, img: torch.Tensor, text: torch.Tensor, seed: int) -> float:
    """The mean CLIPScore of `img` over `AUGMENTED_VIEWS` randomly distorted and cropped views, a fixed draw per
    seed. The optimisation sees only the plain view, so it can game it (a small CLIP especially: "a green circle"
    rose 24.9 → 67.6 for a maroon blob, issue 29); a pattern that only fools the plain view scores less here."""
    gen = torch.Generator().manual_seed(int(seed))
    views = session.scorer.augment(session._clip_input(img).float(), AUGMENTED_VIEWS, generator=gen)
    with session.autocast():
        emb = session.scorer.encode_image(views).float()
    return 100 * float((emb @ text.reshape(-1).float()).clamp(min=0).mean())


@dataclass
class LatentEditOutput(EditOutput):
    """A latent optimisation (`EditOutput`'s fields and these). scores: clip_score and clip_score_before (CLIPScore,
    100 max(cos, 0), of edit / start for the prompt, on the view the optimisation saw), clip_score_augmented and
    clip_score_augmented_before (the same, averaged over `AUGMENTED_VIEWS` augmented views it never saw), loss,
    clip_loss and l2 of the kept latent (the lowest total loss seen), best_step. `latent` is the edit at
    `strength`; `frames`: the start, then the previews."""

    task = "styleclip-edit"
    losses: list[float] = field(default_factory=list)  # total loss per step
    clip_losses: list[float] = field(default_factory=list)  # 1 - cos per step
    l2_distances: list[float] = field(default_factory=list)  # ||w - w0||^2 (or ||s - s0||^2) per step
    styles: list[torch.Tensor] = field(default_factory=list)  # with work_in_stylespace: the edited style vectors


# ----------------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPEditPipeline(StyleCLIPTaskPipeline):
    """Latent optimisation on a StyleCLIP session. `edit_config`: the defaults (`EditConfig`).

    >>> pipe = StyleCLIPEditPipeline.from_pretrained("demo-shapes")  # doctest: +SKIP
    >>> out = pipe.edit(None, "a red circle", num_steps=100, seed=3)  # doctest: +SKIP
    >>> out.save("red/")  # styleclip-edit.png (settings inside), styleclip-edit.mp4  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.edit_config = EditConfig()

    def _render_vars(self, variables: list[torch.Tensor], noise: list[torch.Tensor] | None,
                     stylespace: bool) -> torch.Tensor:
        """Render the optimised variables: [W+] or (StyleSpace) the style vectors."""
        if not stylespace:
            return self.session.render(variables[0], noise)
        return self.session.render_styles(variables, noise)

    def iter_edit(self, latent_or_image: Any = None, prompt: str = "", **settings: Any
                  ) -> Iterator[Progress | LatentEditOutput]:
        """Optimise a W+ latent towards `prompt` (StyleCLIP latent optimisation, "edit" mode).

        `latent_or_image`: None (a random start from `seed`, truncated by `truncation`), a W or W+ latent, an earlier
        result, or an image (PIL, path, array, float tensor in [0, 1]), which is inverted first (`num_invert_steps`,
        the "invert" stage). settings: any `EditConfig` field. Yields a `Progress` every step (a PIL preview every
        `preview_every`), then the `LatentEditOutput` of the latent with the lowest total loss seen, at `strength`.
        With `work_in_stylespace` (StyleCLIP's --work_in_stylespace) the variables are the style vectors of the
        non-toRGB layers instead (Adam on each, L2 on their distance to the start); the result's `styles` hold them.
        """
        t0 = time.perf_counter()
        # 1. check inputs
        prompt = check_text(prompt, "prompt")
        cfg = resolve(self.edit_config, settings)
        session = self.session
        plan = session.plan_start(latent_or_image, cfg)
        n_inv = plan.invert_steps
        total = n_inv + cfg.num_steps
        stage = "edit" if n_inv else ""

        with oom_guard("StyleCLIP latent optimisation"):
            # 2. start latent, its image and embeddings
            step = 0
            start, stopped, steps = yield from session.begin(plan, total)
            w0, noise = start.latent, start.noise
            text = session.scorer.encode_text([prompt]).to(session.device)  # (1, D)
            with torch.no_grad():
                img0 = session.render(w0, noise)
                emb0 = session.clip_embed(img0)  # (1, D)
            frames = [to_uint8(session.to_unit(img0))]
            t_start = time.perf_counter()

            # 3. optimise W+ (or, StyleCLIP's --work_in_stylespace, the non-toRGB style vectors); keep the
            # variables with the lowest total loss
            if cfg.work_in_stylespace:
                with torch.no_grad():
                    start_vars = [s.detach().clone() for s in session.generator.w_to_styles(w0)]
                rgb = [layer.is_rgb for layer in session.generator.style_layers]
                variables = [s.clone().requires_grad_(not is_rgb) for s, is_rgb in zip(start_vars, rgb)]
            else:
                start_vars, variables = [w0], [w0.clone().requires_grad_(True)]
            optimizer = torch.optim.Adam([v for v in variables if v.requires_grad], lr=cfg.lr)
            losses: list[float] = []
            clip_losses: list[float] = []
            l2s: list[float] = []
            best = (math.inf, 0, [v.detach().clone() for v in start_vars])
            for step in range(1, 0 if stopped else cfg.num_steps + 1):
                optimizer.param_groups[0]["lr"] = get_lr((step - 1) / cfg.num_steps, cfg.lr, rampup=cfg.lr_rampup)
                img = self._render_vars(variables, noise, cfg.work_in_stylespace)
                emb = session.clip_embed(img)
                clip_loss = (1 - (emb * text).sum(-1)).sum()
                l2 = sum(((v0 - v) ** 2).sum() for v0, v in zip(start_vars, variables))
                id_loss = (1 - (emb * emb0).sum(-1)).sum()
                loss = clip_loss + cfg.l2_weight * l2 + cfg.id_weight * id_loss
                value = float(loss.detach())
                if value < best[0]:  # the variables this loss belongs to, before the step moves them
                    best = (value, step, [v.detach().clone() for v in variables])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(value)
                clip_losses.append(float(clip_loss.detach()))
                l2s.append(float(l2.detach()))
                preview = None
                if step % cfg.preview_every == 0 or step == cfg.num_steps:
                    shown = session.to_unit(img)
                    cap_frames(frames, to_uint8(shown), step == cfg.num_steps)
                    preview = to_pil(shown)
                metrics = {"loss": value, "clip_loss": clip_losses[-1], "l2": l2s[-1]}
                steps = n_inv + step
                if (yield Progress(steps, total, preview, metrics, stage)) == "stop" and step < cfg.num_steps:
                    stopped = True
                    if preview is None:  # the video ends where the run stopped
                        frames.append(to_uint8(session.to_unit(img)))
                    break
            t_opt = time.perf_counter()

            # 4. package the kept latent, at the requested strength
            best_loss, best_step, best_vars = best
            with torch.no_grad():
                final_vars = [v0 + cfg.strength * (v - v0) for v0, v in zip(start_vars, best_vars)]
                img1 = self._render_vars(final_vars, noise, cfg.work_in_stylespace)
                final = w0 if cfg.work_in_stylespace else final_vars[0]
                score_before = 100 * float((emb0 * text).sum().clamp(min=0))
                score_after = 100 * float((session.clip_embed(img1) * text).sum().clamp(min=0))
                aug_before, aug_after = (_augmented_score(session, im, text, cfg.seed) for im in (img0, img1))
        after, before = session.to_unit(img1), session.to_unit(img0)
        scores = {"clip_score": score_after, "clip_score_before": score_before,
                  "clip_score_augmented": aug_after, "clip_score_augmented_before": aug_before}
        if best_step:
            i = best_step - 1
            scores.update(loss=best_loss, clip_loss=clip_losses[i], l2=l2s[i], best_step=best_step)
        yield LatentEditOutput(
            image=to_pil(after), original=to_pil(before), image_tensor=after, original_tensor=before,
            latent=final.cpu(), start_latent=w0.cpu(), prompt=prompt, losses=losses, clip_losses=clip_losses,
            l2_distances=l2s, inversion=start.inversion, frames=frames, scores=scores,
            styles=[v.cpu() for v in final_vars] if cfg.work_in_stylespace else [],
            timings={"start_s": t_start - t0, "optimise_s": t_opt - t_start,
                     "per_step_s": (t_opt - t_start) / max(step, 1), "total_s": time.perf_counter() - t0},
            seed=cfg.seed, settings=run_settings(cfg, prompt=prompt), stopped=stopped,
            steps_run=steps,
            notice=session.scorer.prompt_notice(prompt))

    def edit(self, latent_or_image: Any = None, prompt: str = "", *, callback: Callable | None = None,
             **settings: Any) -> LatentEditOutput:
        """Run `iter_edit(latent_or_image, prompt, **settings)` to the end; `callback(step, total, preview)`
        returning False stops it (the result is then the best latent so far)."""
        return drain(self.iter_edit(latent_or_image, prompt, **settings), callback)

    def __call__(self, latent_or_image: Any = None, prompt: str = "", **kwargs: Any) -> LatentEditOutput:
        """The studio's pipeline entry point: latent optimisation (`edit`)."""
        return self.edit(latent_or_image, prompt, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------------------------------------------------

register(Task(name="styleclip-edit", title="Latent optimisation (StyleCLIP)", config=EditConfig,
              pipeline=StyleCLIPEditPipeline, method="iter_edit", models=("generator", "clip"),
              load=StyleCLIPEditPipeline.from_pretrained,
              inputs=(Input("latent_or_image", "state", required=False,
                            help="None (a random start from the seed), a latent, an earlier result, or an image to "
                                 "invert first"),
                      Input("prompt", "text", help="what the image should become"))))

__all__ = ["EditConfig", "LatentEditOutput", "StyleCLIPEditPipeline"]
