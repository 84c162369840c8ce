"""StyleCLIP: text-driven editing of a StyleGAN2 latent with CLIP (Patashnik et al., ICCV 2021).

`StyleCLIPPipeline` is the one entry point, on any generator with the `studio.generators` interface (a rosinality
StyleGAN2 checkpoint, or the bundled parametric shapes generator). Its tasks, one per file:

* this module: the pipeline's core (rendering, CLIP embeddings, random samples, where an edit starts) and latent
  optimisation (task `styleclip-edit`; the paper's Sec. 4, `optimization/run_optimization.py`): Adam with the
  ramped learning rate, CLIP loss 1 - cos(E_I(G(w)), E_T(t)) on the area-pooled image, an L2 term on the distance
  to the start latent, and an identity term. StyleCLIP's identity term is ArcFace, which only knows faces; here it
  is 1 - cos between the CLIP image embeddings of the edit and of the start, so it works for any domain.
* pipelines/styleclip_global.py: channel relevance and global directions (tasks `styleclip-relevance`,
  `styleclip-global`; the paper's Sec. 6), as the mixin `GlobalDirectionMixin`.
* pipelines/styleclip_invert.py: a real image to W+ (task `styleclip-invert`, after rosinality's `projector.py`), as
  the mixin `InversionMixin`, with the start settings every edit shares.

The class combines the two mixins with the core here, and all four tasks are registered at the bottom of this
module, where the class is. On the run protocol (`studio.progress`): `iter_edit`, `iter_global_direction`,
`iter_invert` and `iter_relevance` yield a `Progress` every step and end with their result; send "stop" to end
early with the best so far (the edit: the lowest-loss latent seen). `edit`, `global_direction`, `invert` and
`channel_relevance` drain them. Settings and their limits are the config dataclasses (`EditConfig`,
`GlobalDirectionConfig`, `InvertConfig`, `RelevanceConfig`, `SampleConfig`), held by the pipeline as
`edit_config`, `global_config`, ... .
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from pipelines.styleclip_global import (
    ChannelRelevance,
    GlobalDirectionConfig,
    GlobalDirectionMixin,
    GlobalDirectionOutput,
    RelevanceConfig,
    RelevanceOutput,
    default_cache_dir,
)
from pipelines.styleclip_invert import (
    InversionMixin,
    InversionOutput,
    InvertConfig,
    SampleConfig,
    Start,
    StartConfig,
    cap_frames,
    get_lr,
    noise_regularize,
    staged,
)
from studio.generators import DEMO_GENERATOR
from studio.images import to_pil, to_uint8
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import Input, Task, check_text, param, resolve, run_settings

# ----------------------------------------------------------------------------------------------------------------
# Settings and results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EditConfig(StartConfig):
    """Settings of one latent optimisation; the defaults are StyleCLIP `run_optimization.py`'s except where marked
    ours."""

    num_steps: int = param(300, 1, 10_000, ui=(1, 1000), label="Steps (StyleCLIP: 300)",
                           help="optimisation steps; StyleCLIP --step 300")
    lr: float = param(0.1, 1e-6, 10.0, control=False,
                      help="Adam's peak learning rate, ramped up over the first 5 % and down over the last 25 %; "
                           "StyleCLIP --lr 0.1, --lr_rampup 0.05")
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


@dataclass
class SampleOutput(Result):
    """A random sample: `image` (PIL) of `latent` (1, n_latent, D), from `seed` and the truncation."""

    task = "styleclip-sample"
    latent: torch.Tensor | None = None


@dataclass
class EditOutput(Result):
    """What a prompt's edit of one latent gives (latent optimisation, the latent mapper): `image` / `original`: the
    edit at `strength` / the start (PIL; `image_tensor` / `original_tensor` the same as (1, 3, H, W) in [0, 1] on
    the CPU); `latent` the edited W+, `start_latent` the start; `prompt`; `inversion`: the inversion the start came
    from, when an image was edited."""

    original: Image.Image | None = None
    image_tensor: torch.Tensor | None = None
    original_tensor: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    start_latent: torch.Tensor | None = None
    prompt: str = ""
    inversion: InversionOutput | None = None


@dataclass
class LatentEditOutput(EditOutput):
    """A latent optimisation (`EditOutput`'s fields and these). scores: clip_score and clip_score_before (CLIPScore,
    100 max(cos, 0), of edit / start for the prompt), loss, clip_loss and l2 of the kept latent (the lowest total
    loss seen), best_step. `latent` is the edit at `strength`; `frames`: the start, then the previews."""

    task = "styleclip-edit"
    losses: list[float] = field(default_factory=list)  # total loss per step
    clip_losses: list[float] = field(default_factory=list)  # 1 - cos per step
    l2_distances: list[float] = field(default_factory=list)  # ||w - w0||^2 (or ||s - s0||^2) per step
    styles: list[torch.Tensor] = field(default_factory=list)  # with work_in_stylespace: the edited style vectors


# ----------------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPPipeline(InversionMixin, GlobalDirectionMixin):
    """Text-driven StyleGAN editing. `generator`: a `studio.generators` generator; `scorer`: a `CLIPScorer`.

    `precision='bf16'` runs the generator and CLIP under autocast (meant for GPUs; CPU autocast works but is
    rarely faster); the latent, the optimiser and the losses stay fp32. `cache_dir`: where channel relevance is
    cached (default `$STUDIO_CACHE/styleclip`, else ~/.cache/studio/styleclip).

    >>> pipe = StyleCLIPPipeline.from_pretrained("demo-shapes")  # doctest: +SKIP
    >>> out = pipe.edit(None, "a red circle", num_steps=100, seed=3)  # doctest: +SKIP
    >>> out.save("red/")  # styleclip-edit.png (settings inside), styleclip-edit.mp4  # doctest: +SKIP
    """

    def __init__(self, generator: torch.nn.Module, scorer: Any, precision: str | None = None,
                 cache_dir: str | os.PathLike | None = None):
        if precision not in (None, "fp32", "bf16", "fp16"):
            raise ValueError(f"`precision` must be None, 'fp32', 'bf16' or 'fp16', got {precision!r}")
        self.scorer = scorer
        self.device = torch.device(scorer.device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._relevance: dict[str, ChannelRelevance] = {}
        self._published: ChannelRelevance | None = None  # `import_directions`
        self.sample_config = SampleConfig()
        self.edit_config = EditConfig()
        self.global_config = GlobalDirectionConfig()
        self.invert_config = InvertConfig()
        self.relevance_config = RelevanceConfig()

    @classmethod
    def from_pretrained(cls, generator: str = DEMO_GENERATOR, clip: str | None = None,
                        device: str | None = None, **kwargs: Any) -> StyleCLIPPipeline:
        """`generator`: 'demo-shapes', a registry name (see `studio.generators.checkpoints.CHECKPOINTS`), a path or
        'hf:OWNER/REPO/FILE.pt'. `clip` defaults to the demo CLIP for the demo generator, else `STUDIO_CLIP`."""
        from studio.generators import get_generator
        from studio.hub import DEMO_CLIP
        from studio.scorer import get_scorer

        if clip is None and generator == DEMO_GENERATOR:
            clip = DEMO_CLIP  # the only CLIP that knows what the demo generator draws
        scorer = get_scorer(clip, device=device)
        return cls(get_generator(generator, device=scorer.device), scorer, **kwargs)

    # -- small pieces ----------------------------------------------------------------------------------------

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    def render(self, latent: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """W+ (B, n_latent, D) -> (B, 3, H, W) in ~[-1, 1] (stored noise unless `noise` is given)."""
        with self._autocast():
            img = self.generator.synthesis(self.generator.w_to_styles(latent), noise=noise or None)
        return img.float()

    def _render_vars(self, variables: list[torch.Tensor], noise: list[torch.Tensor] | None,
                     stylespace: bool) -> torch.Tensor:
        """Render the optimised variables: [W+] or (StyleSpace) the style vectors."""
        if not stylespace:
            return self.render(variables[0], noise)
        with self._autocast():
            return self.generator.synthesis(variables, noise=noise or None).float()

    def _clip_embed(self, img: torch.Tensor) -> torch.Tensor:
        # StyleCLIP's CLIPLoss: upsample x7 then average-pool by size/32, i.e. an area resize to 224 for CLIP.
        x = (img + 1) / 2
        s = self.scorer.image_size
        if x.shape[-1] > s:
            x = F.interpolate(x, size=(s, s), mode="area")
        with self._autocast():
            return self.scorer.encode_image(x).float()

    @staticmethod
    def to_unit(img: torch.Tensor) -> torch.Tensor:
        """A generator image in ~[-1, 1] -> [0, 1], detached, on the CPU."""
        return ((img.detach().float() + 1) / 2).clamp(0, 1).cpu()

    def latent_avg(self) -> torch.Tensor:
        avg = getattr(self.generator, "latent_avg", None)
        if avg is None:
            avg = self.generator.mean_latent(4096, generator=torch.Generator().manual_seed(0))
            self.generator.latent_avg = avg
        return avg.reshape(1, -1).to(self.device)

    @torch.no_grad()
    def random_latent(self, **settings: Any) -> torch.Tensor:
        """(1, n_latent, D) W+ of a random z, truncated towards the mean latent (StyleCLIP's random starts).
        settings: `SampleConfig` fields (seed, truncation)."""
        cfg = resolve(self.sample_config, settings)
        g = self.generator
        z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(self.device)
        avg = self.latent_avg()
        w = avg + cfg.truncation * (g.get_latent(z) - avg)
        return w.unsqueeze(1).repeat(1, g.n_latent, 1)

    def sample(self, **settings: Any) -> SampleOutput:
        """A random sample to edit (one generator pass). settings: `SampleConfig` fields (seed, truncation)."""
        t0 = time.perf_counter()
        cfg = resolve(self.sample_config, settings)
        with oom_guard("StyleCLIP sampling"), torch.no_grad():
            latent = self.random_latent(**dataclasses.asdict(cfg))
            image = to_pil(self.to_unit(self.render(latent)))
        return SampleOutput(image=image, latent=latent.cpu(), seed=cfg.seed,
                            settings=run_settings(cfg), timings={"total_s": time.perf_counter() - t0},
                            notice=self.scorer.notice)

    def _is_latent(self, x: Any) -> bool:
        g = self.generator
        return isinstance(x, torch.Tensor) and x.shape[-1] == g.style_dim and (
            x.ndim == 1 or (x.ndim == 2 and x.shape[0] in (1, g.n_latent)) or (x.ndim == 3 and x.shape[:2] == (
                1, g.n_latent)))

    def known_start(self, latent_or_image: Any, cfg: StartConfig) -> Start | None:
        """The start an edit begins from, or None when `latent_or_image` is an image to invert first.

        None: a random start from `cfg.seed` and `cfg.truncation`. A W (D,) / (1, D) or W+ (n_latent, D) /
        (1, n_latent, D) latent. A `SampleOutput` or `InversionOutput` (its latent and noise maps), a
        `EditOutput` (a latent optimisation's or a mapper's: its edited latent) or `GlobalDirectionOutput` (its
        start). Anything else is an image."""
        g = self.generator
        x = latent_or_image
        if x is None:
            return Start(self.random_latent(seed=cfg.seed, truncation=cfg.truncation))
        if isinstance(x, InversionOutput):
            return Start.of(x, self.device)
        if isinstance(x, SampleOutput):
            return Start(x.latent.to(self.device))
        if isinstance(x, (EditOutput, GlobalDirectionOutput)):
            inv = x.inversion
            noise = [n.to(self.device) for n in inv.noise] if inv is not None and inv.noise else None
            return Start(x.latent.to(self.device), noise, inv)
        if self._is_latent(x):
            w = x.detach().float().to(self.device)
            if w.ndim == 1 or (w.ndim == 2 and w.shape[0] == 1):
                w = w.reshape(1, 1, -1).repeat(1, g.n_latent, 1)
            elif w.ndim == 2:
                w = w[None]
            if not torch.isfinite(w).all():
                raise ValueError("`latent_or_image` holds non-finite values")
            return Start(w)
        if isinstance(x, torch.Tensor) and x.shape[-1] == g.style_dim:
            raise ValueError(f"`latent_or_image` as a latent must have shape ({g.style_dim},), (1, {g.style_dim}), "
                             f"({g.n_latent}, {g.style_dim}) or (1, {g.n_latent}, {g.style_dim}); got {tuple(x.shape)}")
        return None

    # -- latent optimisation --------------------------------------------------------------------------------

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
        start = self.known_start(latent_or_image, cfg)
        n_inv = cfg.num_invert_steps if start is None else 0
        total = n_inv + cfg.num_steps
        stage = "edit" if n_inv else ""

        with oom_guard("StyleCLIP latent optimisation"):
            # 2. start latent, its image and embeddings
            stopped, step, steps = False, 0, 0
            if start is None:
                inv = yield from staged(self.iter_invert(latent_or_image, num_steps=cfg.num_invert_steps,
                                                         seed=cfg.seed), 0, total, "invert")
                start, stopped, steps = Start.of(inv, self.device), inv.stopped, inv.steps_run
            w0, noise = start.latent, start.noise
            text = self.scorer.encode_text([prompt]).to(self.device)  # (1, D)
            with torch.no_grad():
                img0 = self.render(w0, noise)
                emb0 = self._clip_embed(img0)  # (1, D)
            frames = [to_uint8(self.to_unit(img0))]
            t_start = time.perf_counter()

            # 3. optimise W+ (or, StyleCLIP's --work_in_stylespace, the non-toRGB style vectors); keep the
            # variables with the lowest total loss
            if cfg.work_in_stylespace:
                with torch.no_grad():
                    start_vars = [s.detach().clone() for s in self.generator.w_to_styles(w0)]
                rgb = [layer.is_rgb for layer in self.generator.style_layers]
                variables = [s.clone().requires_grad_(not is_rgb) for s, is_rgb in zip(start_vars, rgb)]
            else:
                start_vars, variables = [w0], [w0.clone().requires_grad_(True)]
            optimizer = torch.optim.Adam([v for v in variables if v.requires_grad], lr=cfg.lr)
            losses: list[float] = []
            clip_losses: list[float] = []
            l2s: list[float] = []
            best = (math.inf, 0, [v.detach().clone() for v in start_vars])
            for step in range(1, 0 if stopped else cfg.num_steps + 1):
                optimizer.param_groups[0]["lr"] = get_lr((step - 1) / cfg.num_steps, cfg.lr)
                img = self._render_vars(variables, noise, cfg.work_in_stylespace)
                emb = self._clip_embed(img)
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
                    shown = self.to_unit(img)
                    cap_frames(frames, to_uint8(shown), step == cfg.num_steps)
                    preview = to_pil(shown)
                metrics = {"loss": value, "clip_loss": clip_losses[-1], "l2": l2s[-1]}
                steps = n_inv + step
                if (yield Progress(steps, total, preview, metrics, stage)) == "stop" and step < cfg.num_steps:
                    stopped = True
                    if preview is None:  # the video ends where the run stopped
                        frames.append(to_uint8(self.to_unit(img)))
                    break
            t_opt = time.perf_counter()

            # 4. package the kept latent, at the requested strength
            best_loss, best_step, best_vars = best
            with torch.no_grad():
                final_vars = [v0 + cfg.strength * (v - v0) for v0, v in zip(start_vars, best_vars)]
                img1 = self._render_vars(final_vars, noise, cfg.work_in_stylespace)
                final = w0 if cfg.work_in_stylespace else final_vars[0]
                score_before = 100 * float((emb0 * text).sum().clamp(min=0))
                score_after = 100 * float((self._clip_embed(img1) * text).sum().clamp(min=0))
        after, before = self.to_unit(img1), self.to_unit(img0)
        scores = {"clip_score": score_after, "clip_score_before": score_before}
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
            notice=self.scorer.notice)

    def edit(self, latent_or_image: Any = None, prompt: str = "", *, callback: Callable | None = None,
             **settings: Any) -> LatentEditOutput:
        """Run `iter_edit(latent_or_image, prompt, **settings)` to the end; `callback(step, total, preview)`
        returning False stops it (the result is then the best latent so far)."""
        return drain(self.iter_edit(latent_or_image, prompt, **settings), callback)

    def __call__(self, latent_or_image: Any = None, prompt: str = "", **kwargs: Any) -> LatentEditOutput:
        """The studio's pipeline entry point: latent optimisation (`edit`)."""
        return self.edit(latent_or_image, prompt, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------


def _load(generator: str | None = None, clip: str | None = None, device: str | None = None) -> StyleCLIPPipeline:
    return StyleCLIPPipeline.from_pretrained(generator or DEMO_GENERATOR, clip, device=device)


_START = Input("latent_or_image", "state", required=False,
               help="None (a random start from the seed), a latent, an earlier result, or an image to invert first")
_MODELS = ("generator", "clip")
register(Task(name="styleclip-edit", title="Latent optimisation (StyleCLIP)", config=EditConfig,
              pipeline=StyleCLIPPipeline, method="iter_edit", models=_MODELS, load=_load,
              inputs=(_START, Input("prompt", "text", help="what the image should become"))))
register(Task(name="styleclip-global", title="Global direction (StyleCLIP)", config=GlobalDirectionConfig,
              pipeline=StyleCLIPPipeline, method="iter_global_direction", models=_MODELS, load=_load,
              inputs=(_START, Input("neutral", "text", help="what the image shows now, e.g. 'a face'"),
                      Input("target", "text", help="what it should show, e.g. 'a smiling face'"))))
register(Task(name="styleclip-invert", title="Inversion (StyleCLIP)", config=InvertConfig,
              pipeline=StyleCLIPPipeline, method="iter_invert", models=_MODELS, load=_load,
              inputs=(Input("image", "image", help="the photo to find a latent for"),)))
register(Task(name="styleclip-relevance", title="Channel relevance (StyleCLIP)", config=RelevanceConfig,
              pipeline=StyleCLIPPipeline, method="iter_relevance", models=_MODELS, load=_load, inputs=()))


__all__ = ["ChannelRelevance", "EditConfig", "EditOutput", "GlobalDirectionConfig", "GlobalDirectionOutput",
           "InversionOutput", "InvertConfig", "LatentEditOutput", "RelevanceConfig", "RelevanceOutput", "SampleConfig",
           "SampleOutput", "StyleCLIPPipeline", "get_lr", "noise_regularize"]
