"""StyleCLIP: text-driven editing of a StyleGAN2 latent with CLIP (Patashnik et al., ICCV 2021).

Three of the paper's tools, on any generator with the `studio.generators` interface (a rosinality StyleGAN2
checkpoint, or the bundled parametric shapes generator):

* `edit` -- latent optimisation in W+ (the paper's Sec. 4, `optimization/run_optimization.py`): Adam with the
  ramped learning rate, CLIP loss 1 - cos(E_I(G(w)), E_T(t)) on the area-pooled image, an L2 term on the distance
  to the start latent, and an identity term. StyleCLIP's identity term is ArcFace, which only knows faces; here it
  is 1 - cos between the CLIP image embeddings of the edit and of the start, so it works for any domain.
* `global_direction` -- the paper's Sec. 6: each StyleSpace channel's CLIP relevance is precomputed once per
  generator (the image-embedding change when the channel moves by +-5 std, averaged over samples; StyleCLIP's
  `GetFs`) and cached on disk; an edit from a neutral to a target text then keeps the channels whose relevance to
  the text direction is at least beta and moves them by alpha std (`GetBoundary`, `SplitS`).
* `invert` -- a real image to W+ by optimisation, after rosinality's `projector.py` (ramped lr, noise on the
  latent early on, optimised per-layer noise maps with its multi-scale autocorrelation penalty), with pixel MSE
  and a CLIP-embedding loss in place of LPIPS (no VGG weights here).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from studio.images import to_tensor

Callback = Callable[[int, int, "torch.Tensor | None"], "bool | None"]


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class InversionOutput:
    image: torch.Tensor  # (1, 3, H, W) reconstruction in [0, 1]
    target: torch.Tensor  # (1, 3, H, W) the input, resized to the generator, in [0, 1]
    latent: torch.Tensor  # (1, n_latent, style_dim) W+
    noise: list[torch.Tensor]  # optimised noise maps (empty for generators without noise inputs)
    mse: float  # reconstruction mean squared error in [0, 1] pixel units
    psnr: float  # dB
    start_mse: float  # error of the starting (mean-latent) image, for reference
    losses: list[float]
    timings: dict[str, float]


@dataclass
class LatentEditOutput:
    image: torch.Tensor  # (1, 3, H, W) edited image in [0, 1], at `strength`
    original: torch.Tensor  # (1, 3, H, W) the start image in [0, 1]
    latent: torch.Tensor  # (1, n_latent, style_dim) edited W+ at `strength`
    start_latent: torch.Tensor
    prompt: str
    score_before: float  # CLIPScore (100 * max(cos, 0)) of the start image for the prompt
    score_after: float
    clip_losses: list[float]  # 1 - cos per step
    l2_distances: list[float]  # ||w - w0||^2 per step
    steps_run: int
    seed: int | None
    frames: list[torch.Tensor] = field(default_factory=list)  # previews (3, H, W) in [0, 1]
    inversion: InversionOutput | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ChannelRelevance:
    """Per-StyleSpace-channel CLIP directions (StyleCLIP's `fs3`) and channel statistics."""

    relevance: torch.Tensor  # (C, D) unit CLIP direction of each channel; zeros for channels not analysed
    std: torch.Tensor  # (C,) standard deviation of each style channel over mapped random z
    analysed: torch.Tensor  # (C,) bool: False for toRGB channels (StyleCLIP leaves them out)
    layer_sizes: list[int]  # channels per style layer, in `generator.style_layers` order
    layer_names: list[str]
    num_samples: int
    generator_id: str
    path: str | None = None  # the cache file

    def locate(self, flat_index: int) -> tuple[str, int]:
        """(layer name, channel within layer) of a flat channel index."""
        start = 0
        for name, size in zip(self.layer_names, self.layer_sizes):
            if flat_index < start + size:
                return name, flat_index - start
            start += size
        raise ValueError(f"`flat_index` must be < {start}, got {flat_index}")


@dataclass
class GlobalDirectionOutput:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    original: torch.Tensor
    latent: torch.Tensor  # (1, n_latent, style_dim) the start W+ (the edit lives in StyleSpace)
    styles: list[torch.Tensor]  # edited style vectors
    direction: list[torch.Tensor]  # per-layer delta s for alpha = 1
    neutral: str
    target: str
    alpha: float
    beta: float
    num_channels: int  # channels moved
    top_channels: list[tuple[str, int, float]]  # (layer, channel, relevance) largest |relevance| first
    score_before: float  # CLIPScore of the image for the target text
    score_after: float
    inversion: InversionOutput | None = None
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Helpers from the references
# ----------------------------------------------------------------------------------------------------------------


def get_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's (and rosinality projector's) schedule: linear warm-up, cosine ramp-down over the last quarter."""
    lr_ramp = min(1.0, (1 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1.0, t / rampup)
    return initial_lr * lr_ramp


def noise_regularize(noises: list[torch.Tensor]) -> torch.Tensor:
    """rosinality projector: squared autocorrelation of each noise map at shifts of one, over a pyramid."""
    loss = torch.zeros(())
    for noise in noises:
        size = noise.shape[2]
        loss = loss.to(noise.device)
        while True:
            loss = (loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2)
                    + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2))
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return loss


def _check_range(name: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (low <= value <= high) or (not integer and math.isnan(value)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"`{name}` must be {kind} in [{low}, {high}], got {value!r}")


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{name}` must be a non-empty string, got {value!r}")
    return value.strip()


def default_cache_dir() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "studio")) / "styleclip"


# ----------------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPPipeline:
    """Text-driven StyleGAN editing. `generator`: a `studio.generators` generator; `scorer`: a `CLIPScorer`.

    `precision='bf16'` runs the generator and CLIP under autocast (meant for GPUs; CPU autocast works but is
    rarely faster); the latent, the optimiser and the losses stay fp32.
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

    @classmethod
    def from_pretrained(cls, generator: str = "demo-shapes", clip: str | None = None,
                        device: str | None = None, **kwargs: Any) -> "StyleCLIPPipeline":
        """`generator`: 'demo-shapes', a registry name (see `studio.generators.checkpoints.CHECKPOINTS`), a path or
        'hf:OWNER/REPO/FILE.pt'. `clip` defaults to the demo CLIP for the demo generator, else `STUDIO_CLIP`."""
        from studio.generators import DEMO_GENERATOR, get_generator
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
        return ((img.detach().float() + 1) / 2).clamp(0, 1).cpu()

    def latent_avg(self) -> torch.Tensor:
        avg = getattr(self.generator, "latent_avg", None)
        if avg is None:
            avg = self.generator.mean_latent(4096, generator=torch.Generator().manual_seed(0))
            self.generator.latent_avg = avg
        return avg.reshape(1, -1).to(self.device)

    @torch.no_grad()
    def random_latent(self, seed: int, truncation: float = 0.7) -> torch.Tensor:
        """(1, n_latent, D) W+ of a random z, truncated towards the mean latent (StyleCLIP's random starts)."""
        g = self.generator
        z = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(int(seed))).to(self.device)
        avg = self.latent_avg()
        w = avg + truncation * (g.get_latent(z) - avg)
        return w.unsqueeze(1).repeat(1, g.n_latent, 1)

    def _image_tensor(self, image: Any) -> torch.Tensor:
        """PIL / path / bytes / array / float tensor in [0, 1] -> (1, 3, size, size) in [0, 1] on the device."""
        if isinstance(image, torch.Tensor):
            if not image.is_floating_point():
                raise ValueError(f"`image` tensor must be floats in [0, 1], got dtype {image.dtype}")
        else:
            image = to_tensor(image, "image")  # safe decoding, RGB, size limits (studio.images)
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[:2] != (1, 3) or min(image.shape[-2:]) < 8:
            raise ValueError(f"`image` must have shape (3, H, W) or (1, 3, H, W) with H, W >= 8, "
                             f"got {tuple(image.shape)}")
        size = self.generator.size
        image = image.float().to(self.device)
        if image.shape[-2:] != (size, size):  # shortest side to size, centre crop (as the scorer does)
            h, w = image.shape[-2:]
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            image = F.interpolate(image, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - size) // 2, (nw - size) // 2
            image = image[..., top:top + size, left:left + size]
        return image.clamp(0, 1)

    def _is_latent(self, x: Any) -> bool:
        g = self.generator
        return isinstance(x, torch.Tensor) and x.shape[-1] == g.style_dim and (
            x.ndim == 1 or (x.ndim == 2 and x.shape[0] in (1, g.n_latent)) or (x.ndim == 3 and x.shape[:2] == (
                1, g.n_latent)))

    def resolve_start(self, latent_or_image: Any, seed: int | None, truncation: float,
                      invert_steps: int) -> tuple[torch.Tensor, list[torch.Tensor] | None, InversionOutput | None]:
        """(W+ (1, n_latent, D), noise maps or None, inversion or None) from whatever the caller gave."""
        g = self.generator
        if latent_or_image is None:
            return self.random_latent(0 if seed is None else seed, truncation), None, None
        if isinstance(latent_or_image, InversionOutput):
            inv = latent_or_image
            return inv.latent.to(self.device), [n.to(self.device) for n in inv.noise] or None, inv
        if isinstance(latent_or_image, (LatentEditOutput, GlobalDirectionOutput)):
            inv = latent_or_image.inversion
            noise = [n.to(self.device) for n in inv.noise] if inv is not None and inv.noise else None
            return latent_or_image.latent.to(self.device), noise, inv
        if self._is_latent(latent_or_image):
            w = latent_or_image.detach().float().to(self.device)
            if w.ndim == 1 or (w.ndim == 2 and w.shape[0] == 1):
                w = w.reshape(1, 1, -1).repeat(1, g.n_latent, 1)
            elif w.ndim == 2:
                w = w[None]
            if not torch.isfinite(w).all():
                raise ValueError("`latent_or_image` holds non-finite values")
            return w, None, None
        if isinstance(latent_or_image, torch.Tensor) and latent_or_image.shape[-1] == g.style_dim:
            raise ValueError(f"`latent_or_image` as a latent must have shape ({g.style_dim},), (1, {g.style_dim}), "
                             f"({g.n_latent}, {g.style_dim}) or (1, {g.n_latent}, {g.style_dim}); "
                             f"got {tuple(latent_or_image.shape)}")
        inv = self.invert(latent_or_image, steps=invert_steps)
        return inv.latent.to(self.device), [n.to(self.device) for n in inv.noise] or None, inv

    # -- 1. latent optimisation -----------------------------------------------------------------------------

    def edit(self, latent_or_image: Any = None, prompt: str = "", *, steps: int = 300, lr: float = 0.1,
             l2_weight: float = 0.008, id_weight: float = 0.005, truncation: float = 0.7, strength: float = 1.0,
             seed: int | None = 0, invert_steps: int = 200, callback: Callback | None = None,
             preview_every: int = 10) -> LatentEditOutput:
        """Optimise a W+ latent towards `prompt` (StyleCLIP latent optimisation, "edit" mode).

        `latent_or_image`: None (a random start from `seed`, truncated by `truncation`), a W or W+ latent, an
        image (PIL, array, tensor in [0, 1]; inverted first with `invert_steps`), or an earlier result.
        Defaults are StyleCLIP's: lr 0.1, 300 steps, l2_lambda 0.008, truncation 0.7; `id_weight` 0.005 is its
        id_lambda, applied to our CLIP-embedding identity loss (same 1 - cos scale as its ArcFace loss).
        `strength` scales the final move from the start latent (1 = the optimised latent).
        `callback(step, total, preview)` gets a (1, 3, H, W) preview in [0, 1] every `preview_every` steps (else
        None); returning False stops early.
        """
        # 1. check inputs
        prompt = _check_text("prompt", prompt)
        _check_range("steps", steps, 1, 10000, integer=True)
        _check_range("lr", lr, 1e-6, 10.0)
        _check_range("l2_weight", l2_weight, 0.0, 1e3)
        _check_range("id_weight", id_weight, 0.0, 1e3)
        _check_range("truncation", truncation, 0.0, 1.0)
        _check_range("strength", strength, 0.0, 2.0)
        _check_range("preview_every", preview_every, 1, 10000, integer=True)
        _check_range("invert_steps", invert_steps, 1, 10000, integer=True)
        t0 = time.perf_counter()

        # 2. start latent, its image and embeddings
        start, noise, inversion = self.resolve_start(latent_or_image, seed, truncation, invert_steps)
        text = self.scorer.encode_text([prompt]).to(self.device)  # (1, D)
        with torch.no_grad():
            img0 = self.render(start, noise)
            emb0 = self._clip_embed(img0)  # (1, D)
        t_start = time.perf_counter()

        # 3. optimise
        latent = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([latent], lr=lr)
        clip_losses, l2s, frames = [], [], []
        steps_run = 0
        for i in range(steps):
            optimizer.param_groups[0]["lr"] = get_lr(i / steps, lr)
            img = self.render(latent, noise)
            emb = self._clip_embed(img)
            clip_loss = (1 - (emb * text).sum(-1)).sum()
            l2 = ((start - latent) ** 2).sum()
            id_loss = (1 - (emb * emb0).sum(-1)).sum()
            loss = clip_loss + l2_weight * l2 + id_weight * id_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clip_losses.append(float(clip_loss.detach()))
            l2s.append(float(l2.detach()))
            steps_run = i + 1
            preview = None
            if steps_run % preview_every == 0 or steps_run == steps:
                preview = self.to_unit(img)
                frames.append(preview[0])
            if callback is not None and callback(steps_run, steps, preview) is False:
                break
        t_opt = time.perf_counter()

        # 4. package the result, at the requested strength
        with torch.no_grad():
            final = start + strength * (latent.detach() - start)
            img1 = self.render(final, noise)
            score_before = 100 * float((emb0 * text).sum().clamp(min=0))
            score_after = 100 * float((self._clip_embed(img1) * text).sum().clamp(min=0))
        return LatentEditOutput(
            image=self.to_unit(img1), original=self.to_unit(img0), latent=final.cpu(), start_latent=start.cpu(),
            prompt=prompt, score_before=score_before, score_after=score_after, clip_losses=clip_losses,
            l2_distances=l2s, steps_run=steps_run, seed=seed if latent_or_image is None else None, frames=frames,
            inversion=inversion,
            timings={"start_s": t_start - t0, "optimise_s": t_opt - t_start,
                     "ms_per_step": 1000 * (t_opt - t_start) / max(steps_run, 1)})

    def __call__(self, latent_or_image: Any = None, prompt: str = "", **kwargs: Any) -> LatentEditOutput:
        """The studio's pipeline entry point: latent optimisation (`edit`)."""
        return self.edit(latent_or_image, prompt, **kwargs)

    # -- 2. global directions ---------------------------------------------------------------------------------

    def _relevance_path(self, num_samples: int, seed: int, magnitude: float, method: str) -> Path:
        gid = self.generator.identity()
        clip_id = hashlib.sha256(str(self.scorer.spec).encode()).hexdigest()[:12]
        detail = f"m{magnitude:g}" if method == "finite" else "jac"
        return self.cache_dir / f"relevance-{gid[:16]}-{clip_id}-n{num_samples}-s{seed}-{detail}.pt"

    def _jacobian_directions(self, base: list[torch.Tensor], batch_size: int) -> torch.Tensor:
        """(C, D) d n / d s_c for every style channel c at `base`, n the unit CLIP embedding.

        Reverse mode, `batch_size` rows of the Jacobian per pass: the sample is replicated k times and copy i
        back-propagates the one-hot cotangent e_(d0+i), so its style gradients are row d0+i of the Jacobian.
        """
        g, rows = self.generator, []
        dim = None
        d0 = 0
        while dim is None or d0 < dim:
            k = batch_size if dim is None else min(batch_size, dim - d0)
            styles = [s.detach().repeat(k, 1).requires_grad_(True) for s in base]
            with self._autocast():
                img = g.synthesis(styles).float()
            emb = self._clip_embed(img)  # (k, D)
            dim = emb.shape[-1]
            k = min(k, dim - d0)
            cot = torch.zeros_like(emb)
            cot[torch.arange(k), d0 + torch.arange(k)] = 1.0
            grads = torch.autograd.grad(emb, styles, grad_outputs=cot)
            rows.append(torch.cat([gr[:k].float() for gr in grads], dim=1).cpu())  # (k, C)
            d0 += k
        return torch.cat(rows).t()  # (C, D)

    @torch.no_grad()
    def _finite_directions(self, base: list[torch.Tensor], channels: list[int], std: torch.Tensor,
                           magnitude: float, batch_size: int) -> torch.Tensor:
        """(C, D) unit differences n(s + m std_c e_c) - n(s - m std_c e_c) for `channels` (zeros elsewhere)."""
        g = self.generator
        offsets = np.cumsum([0] + [s.shape[1] for s in base])
        layer_of = np.searchsorted(offsets, np.arange(offsets[-1]), side="right") - 1
        out: torch.Tensor | None = None
        step = max(1, batch_size // 2)
        for k0 in range(0, len(channels), step):
            chunk = channels[k0:k0 + step]
            n = len(chunk)
            styles = [s.repeat(2 * n, 1) for s in base]  # rows [0, n): minus, [n, 2n): plus
            for r, c in enumerate(chunk * 2):
                li = int(layer_of[c])
                styles[li][r, c - offsets[li]] += (1.0 if r >= n else -1.0) * magnitude * std[c]
            with self._autocast():
                img = g.synthesis(styles).float()
            emb = self._clip_embed(img)  # (2n, D) normalised
            diff = F.normalize(emb[n:] - emb[:n], dim=-1).cpu()
            if out is None:
                out = torch.zeros(int(offsets[-1]), diff.shape[-1])
            out[chunk] = diff
        return out

    def channel_relevance(self, num_samples: int = 100, *, seed: int = 0, magnitude: float = 5.0,
                          method: str = "finite", batch_size: int = 32, std_samples: int = 2000,
                          use_cache: bool = True, callback: Callback | None = None) -> ChannelRelevance:
        """Each non-toRGB StyleSpace channel's unit CLIP direction (StyleCLIP `GetFs`), cached on disk.

        `method='finite'` (StyleCLIP's): for each of `num_samples` random styles s and each channel c, render
        s +- `magnitude` * std_c, embed both with CLIP, take the difference of the normalised embeddings,
        normalise it; average over samples and normalise again. Cost: 2 * channels * num_samples generator+CLIP
        passes, batched by `batch_size` (FFHQ 1024: 6048 channels -> 1.2 M passes for 100 samples).
        `method='jacobian'`: its first-order limit -- the normalised derivative of the unit embedding w.r.t. each
        channel, from D (CLIP width, 512 for ViT-B/32) reverse-mode rows per sample, i.e. about 3 * D instead of
        2 * channels pass-equivalents (~8x less for FFHQ). Large +-5 std moves are not linear, so the two agree
        closely only for small `magnitude`; 'finite' is the faithful default.
        The cache file is keyed by the generator's checkpoint hash, the CLIP spec and these settings.
        `callback(done, total, None)` reports progress per sample; returning False aborts with ValueError.
        """
        # 1. check inputs
        if method not in ("finite", "jacobian"):
            raise ValueError(f"`method` must be 'finite' or 'jacobian', got {method!r}")
        _check_range("num_samples", num_samples, 1, 100000, integer=True)
        _check_range("magnitude", magnitude, 1e-3, 100.0)
        _check_range("batch_size", batch_size, 1, 4096, integer=True)
        _check_range("std_samples", std_samples, 2, 10**6, integer=True)
        path = self._relevance_path(num_samples, seed, magnitude, method)
        if use_cache and str(path) in self._relevance:
            return self._relevance[str(path)]
        g = self.generator
        layers = g.style_layers
        sizes = [layer.channels for layer in layers]
        if use_cache and path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
            if [int(x) for x in data["layer_sizes"]] == sizes:
                rel = ChannelRelevance(data["relevance"], data["std"], data["analysed"].bool(), sizes,
                                       [layer.name for layer in layers], int(data["num_samples"]), g.identity(),
                                       str(path))
                self._relevance[str(path)] = rel
                return rel

        # 2. channel statistics over mapped random z (StyleCLIP `GetCodeMS`)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.randn(std_samples, g.style_dim, generator=gen).to(self.device)
            w = g.get_latent(z).unsqueeze(1).repeat(1, g.n_latent, 1)
            std = torch.cat([s.float().std(0) for s in g.w_to_styles(w)])  # (C,)
        analysed = torch.cat([torch.full((c,), not layer.is_rgb) for c, layer in zip(sizes, layers)])
        channels = analysed.nonzero().flatten().tolist()

        # 3. +- magnitude * std per channel (or the Jacobian), per sample, batched
        acc: torch.Tensor | None = None  # (C, D) sum over samples of unit embedding differences
        for j in range(num_samples):
            with torch.no_grad():
                zj = torch.randn(1, g.style_dim, generator=gen).to(self.device)
                base = g.w_to_styles(g.get_latent(zj).unsqueeze(1).repeat(1, g.n_latent, 1))
            if method == "jacobian":
                with torch.enable_grad():
                    jac = F.normalize(self._jacobian_directions(base, batch_size), dim=-1)
                acc = jac if acc is None else acc + jac
            else:
                diff = self._finite_directions(base, channels, std, magnitude, batch_size)
                acc = diff if acc is None else acc + diff
            if callback is not None and callback(j + 1, num_samples, None) is False:
                raise ValueError("channel relevance computation was stopped before it finished")
        relevance = F.normalize(acc / num_samples, dim=-1) * analysed[:, None]

        # 4. cache
        rel = ChannelRelevance(relevance, std.cpu(), analysed, sizes, [layer.name for layer in layers],
                               num_samples, g.identity(), str(path))
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"relevance": relevance, "std": std.cpu(), "analysed": analysed,
                        "layer_sizes": torch.tensor(sizes), "num_samples": torch.tensor(num_samples)}, tmp)
            os.replace(tmp, path)
        self._relevance[str(path)] = rel
        return rel

    def text_direction(self, neutral: str, target: str, templates: str | list[str] | None = None) -> torch.Tensor:
        """Unit CLIP text direction target - neutral over a prompt-template ensemble (StyleCLIP `GetDt`)."""
        if templates is None:
            templates = "shapes" if getattr(self.scorer, "is_demo", False) else "imagenet"
        emb = self.scorer.encode_prompts([neutral, target], templates=templates)
        return F.normalize(emb[1] - emb[0], dim=0).cpu()

    @staticmethod
    def style_direction(relevance: ChannelRelevance, text_dir: torch.Tensor, beta: float) -> tuple[torch.Tensor, int]:
        """Flat delta s for alpha = 1 and the number of channels kept (StyleCLIP `GetBoundary` + `SplitS`)."""
        r = relevance.relevance @ text_dir  # (C,)
        r = torch.where(r.abs() < beta, torch.zeros_like(r), r) * relevance.analysed
        kept = int((r != 0).sum())
        if kept == 0:
            best = float((relevance.relevance @ text_dir).abs().max())
            raise ValueError(f"`beta` {beta:g} leaves no channels to move: the largest channel relevance for this "
                             f"edit is {best:.3f}; lower beta below that (StyleCLIP uses 0.08-0.3)")
        return r / r.abs().max() * relevance.std, kept

    def global_direction(self, latent_or_image: Any = None, neutral: str = "", target: str = "", *,
                         alpha: float = 4.1, beta: float = 0.15, num_samples: int = 100,
                         relevance_method: str = "finite", relevance: ChannelRelevance | None = None,
                         templates: str | list[str] | None = None,
                         truncation: float = 0.7, seed: int | None = 0, invert_steps: int = 200,
                         callback: Callback | None = None) -> GlobalDirectionOutput:
        """Edit along StyleCLIP's global direction from `neutral` to `target` text.

        alpha (strength, in std units) and beta (disentanglement threshold on |relevance|) default to the
        StyleCLIP global-direction notebook's 4.1 and 0.15. Relevance comes from `relevance` or
        `channel_relevance(num_samples, method=relevance_method)` (cached; `callback` reports its progress).
        A beta above every channel's relevance raises ValueError saying how far to lower it.
        """
        # 1. check inputs
        neutral, target = _check_text("neutral", neutral), _check_text("target", target)
        _check_range("alpha", alpha, -100.0, 100.0)
        _check_range("beta", beta, 0.0, 1.0)
        _check_range("truncation", truncation, 0.0, 1.0)
        t0 = time.perf_counter()

        # 2. start latent and relevance
        start, noise, inversion = self.resolve_start(latent_or_image, seed, truncation, invert_steps)
        rel = relevance if relevance is not None else self.channel_relevance(num_samples, method=relevance_method,
                                                                             callback=callback)
        t_rel = time.perf_counter()

        # 3. direction in StyleSpace and the edit
        text_dir = self.text_direction(neutral, target, templates)  # (D,)
        delta, kept = self.style_direction(rel, text_dir, beta)
        delta_layers = list(delta.to(self.device).split(rel.layer_sizes))
        with torch.no_grad():
            styles = self.generator.w_to_styles(start)
            edited = [s + alpha * d for s, d in zip(styles, delta_layers)]
            with self._autocast():
                img0 = self.generator.synthesis(styles, noise=noise).float()
                img1 = self.generator.synthesis(edited, noise=noise).float()
            text = self.scorer.encode_text([target]).to(self.device)
            before = 100 * float((self._clip_embed(img0) * text).sum().clamp(min=0))
            after = 100 * float((self._clip_embed(img1) * text).sum().clamp(min=0))
        t_edit = time.perf_counter()

        # 4. package
        r = rel.relevance @ text_dir
        order = r.abs().argsort(descending=True)[:kept][:10].tolist()
        top = [(*rel.locate(i), float(r[i])) for i in order]
        return GlobalDirectionOutput(
            image=self.to_unit(img1), original=self.to_unit(img0), latent=start.cpu(),
            styles=[s.cpu() for s in edited], direction=[d.cpu() for d in delta_layers], neutral=neutral,
            target=target, alpha=alpha, beta=beta, num_channels=kept, top_channels=top, score_before=before,
            score_after=after, inversion=inversion,
            timings={"relevance_s": t_rel - t0, "edit_ms": 1000 * (t_edit - t_rel)})

    # -- 3. inversion -----------------------------------------------------------------------------------------

    def invert(self, image: Any, *, steps: int = 200, lr: float = 0.1, pixel_weight: float = 1.0,
               clip_weight: float = 1.0, noise_weight: float = 1e5, latent_noise: float = 0.05,
               noise_ramp: float = 0.75, seed: int = 0, callback: Callback | None = None,
               preview_every: int = 10) -> InversionOutput:
        """Project an image into W+ (rosinality `projector.py` defaults: lr 0.1, latent noise 0.05 ramped down
        over the first 75%, noise regularisation 1e5), with pixel MSE and CLIP-embedding losses."""
        # 1. check inputs
        target = self._image_tensor(image)
        _check_range("steps", steps, 1, 10000, integer=True)
        _check_range("lr", lr, 1e-6, 10.0)
        for name, value in (("pixel_weight", pixel_weight), ("clip_weight", clip_weight),
                            ("noise_weight", noise_weight), ("latent_noise", latent_noise)):
            _check_range(name, value, 0.0, 1e9)
        if pixel_weight == 0 and clip_weight == 0:
            raise ValueError("`pixel_weight` and `clip_weight` cannot both be 0")
        _check_range("noise_ramp", noise_ramp, 1e-3, 1.0)
        _check_range("preview_every", preview_every, 1, 10000, integer=True)
        t0 = time.perf_counter()
        g = self.generator

        # 2. start from the mean latent; random noise maps (rosinality projector)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w_samples = g.get_latent(torch.randn(10000, g.style_dim, generator=gen).to(self.device))
            w_mean = w_samples.mean(0)
            w_std = float(((w_samples - w_mean).pow(2).sum() / 10000) ** 0.5)
            target_emb = self._clip_embed(target * 2 - 1)
        noises = [torch.randn(n.shape, generator=gen).to(self.device).requires_grad_(True) for n in g.make_noise()]
        latent = w_mean.detach().reshape(1, 1, -1).repeat(1, g.n_latent, 1).requires_grad_(True)
        optimizer = torch.optim.Adam([latent] + noises, lr=lr)
        with torch.no_grad():
            start_mse = float(F.mse_loss(self.to_unit(self.render(latent, noises)), target.cpu()))

        # 3. optimise
        losses = []
        for i in range(steps):
            t = i / steps
            optimizer.param_groups[0]["lr"] = get_lr(t, lr)
            strength = w_std * latent_noise * max(0.0, 1 - t / noise_ramp) ** 2
            latent_n = latent + torch.randn(latent.shape, generator=gen).to(self.device) * strength
            img = self.render(latent_n, noises)
            loss = pixel_weight * F.mse_loss((img + 1) / 2, target)
            if clip_weight:
                loss = loss + clip_weight * (1 - (self._clip_embed(img) * target_emb).sum(-1)).mean()
            if noises and noise_weight:
                loss = loss + noise_weight * noise_regularize(noises)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # rosinality noise_normalize_
                for n in noises:
                    n.sub_(n.mean()).div_(n.std())
            losses.append(float(loss.detach()))
            preview = self.to_unit(img) if (i + 1) % preview_every == 0 or i + 1 == steps else None
            if callback is not None and callback(i + 1, steps, preview) is False:
                break

        # 4. package
        with torch.no_grad():
            recon = self.to_unit(self.render(latent, noises))
        mse = float(F.mse_loss(recon, target.cpu()))
        return InversionOutput(
            image=recon, target=target.cpu(), latent=latent.detach().cpu(), noise=[n.detach().cpu() for n in noises],
            mse=mse, psnr=10 * math.log10(1.0 / max(mse, 1e-10)), start_mse=start_mse, losses=losses,
            timings={"invert_s": time.perf_counter() - t0})


# ----------------------------------------------------------------------------------------------------------------
# Plain functions for the Latent Editing tab (app.py passes them to studio.ui.latent_editing.build)
# ----------------------------------------------------------------------------------------------------------------


def make_ui_functions(get_pipeline: Callable[[str, str], StyleCLIPPipeline],
                      wrap: Callable[[Callable], Callable] | None = None) -> dict[str, Callable]:
    """The tab's handlers as plain functions: strings, numbers, PIL/uint8 images and an opaque state in;
    dicts of uint8 images and text out. `get_pipeline(generator, clip)` returns a (cached) pipeline;
    `wrap` decorates the GPU-bound ones (e.g. `spaces.GPU` on ZeroGPU)."""
    from studio.media import to_uint8

    wrap = wrap or (lambda fn: fn)

    def img(t: torch.Tensor) -> np.ndarray:
        return to_uint8(t[0] if t.ndim == 4 else t)

    def source(generator: str, clip: str, state: Any) -> Any:
        # the state is {"key": (generator, clip), "source": latent | InversionOutput}; stale states are ignored
        if isinstance(state, dict) and state.get("key") == (generator, clip):
            return state["source"]
        return None

    def notice(pipe: StyleCLIPPipeline) -> str | None:
        return getattr(pipe.scorer, "notice", None)

    @wrap
    def sample(generator: str, clip: str, seed: int, truncation: float = 0.7) -> dict:
        pipe = get_pipeline(generator, clip)
        with torch.no_grad():
            latent = pipe.random_latent(int(seed), truncation)
            image = pipe.to_unit(pipe.render(latent))
        return {"image": img(image), "state": {"key": (generator, clip), "source": latent.cpu()},
                "info": f"Random sample, seed {int(seed)}, truncation {truncation:g}", "notice": notice(pipe)}

    @wrap
    def invert(generator: str, clip: str, image: Any, steps: int,
               progress: Callable[[int, int], None] | None = None) -> dict:
        pipe = get_pipeline(generator, clip)
        out = pipe.invert(image, steps=int(steps),
                          callback=(lambda step, total, _: progress(step, total)) if progress else None)
        return {"image": img(out.image), "target": img(out.target),
                "state": {"key": (generator, clip), "source": out},
                "info": f"Reconstruction MSE {out.mse:.4f} (PSNR {out.psnr:.1f} dB; start {out.start_mse:.4f}) "
                        f"after {len(out.losses)} steps, {out.timings['invert_s']:.1f} s",
                "notice": notice(pipe)}

    @wrap
    def edit(generator: str, clip: str, state: Any, seed: int, prompt: str, steps: int, l2_weight: float,
             id_weight: float, strength: float):
        """Yields {"preview", "progress"} while optimising, then the final dict with "before"/"after"."""
        import queue
        import threading

        pipe = get_pipeline(generator, clip)
        updates: queue.Queue = queue.Queue()
        result: dict = {}
        stop = threading.Event()  # set when the page cancels (the generator is closed): the run ends at its next step

        def callback(step: int, total: int, preview: torch.Tensor | None) -> bool:
            if preview is not None:
                updates.put({"preview": img(preview), "progress": f"step {step}/{total}"})
            return not stop.is_set()

        def run() -> None:
            try:
                result["out"] = pipe.edit(source(generator, clip, state), prompt, steps=int(steps),
                                          l2_weight=float(l2_weight), id_weight=float(id_weight),
                                          strength=float(strength), seed=int(seed), callback=callback)
            except Exception as err:  # noqa: BLE001 -- re-raised in the caller's thread
                result["error"] = err
            updates.put(None)

        threading.Thread(target=run, daemon=True).start()
        try:
            while (item := updates.get()) is not None:
                yield item
        finally:
            stop.set()
        if "error" in result:
            raise result["error"]
        out: LatentEditOutput = result["out"]
        yield {"preview": img(out.image), "before": img(out.original), "after": img(out.image),
               "frames": [to_uint8(f) for f in out.frames],
               "state": {"key": (generator, clip), "source": out.inversion or out.start_latent},
               "progress": f"done: {out.steps_run} steps, {out.timings['ms_per_step']:.0f} ms/step",
               "info": f"CLIPScore for “{out.prompt}”: {out.score_before:.1f} → {out.score_after:.1f}; "
                       f"‖w − w₀‖² = {out.l2_distances[-1]:.3f}", "notice": notice(pipe)}

    @wrap
    def relevance(generator: str, clip: str, num_samples: int, progress: Callable[[int, int], None] | None = None
                  ) -> str:
        pipe = get_pipeline(generator, clip)
        t0 = time.perf_counter()
        rel = pipe.channel_relevance(int(num_samples), callback=(lambda d, t, _: progress(d, t)) if progress else None)
        return (f"Channel relevance ready: {int(rel.analysed.sum())} channels, {rel.num_samples} samples "
                f"({time.perf_counter() - t0:.1f} s; cached at {rel.path})")

    @wrap
    def global_edit(generator: str, clip: str, state: Any, seed: int, neutral: str, target: str, alpha: float,
                    beta: float, num_samples: int) -> dict:
        pipe = get_pipeline(generator, clip)
        out = pipe.global_direction(source(generator, clip, state), neutral, target, alpha=float(alpha),
                                    beta=float(beta), num_samples=int(num_samples), seed=int(seed))
        top = ", ".join(f"{name}[{c}] {r:+.2f}" for name, c, r in out.top_channels[:5])
        return {"before": img(out.original), "after": img(out.image),
                "info": f"{out.num_channels} channels moved (α {out.alpha:g}, β {out.beta:g}); CLIPScore for "
                        f"“{out.target}”: {out.score_before:.1f} → {out.score_after:.1f}; "
                        f"{out.timings['edit_ms']:.0f} ms. Top channels: {top}", "notice": notice(pipe)}

    return {"sample": sample, "invert": invert, "edit": edit, "relevance": relevance, "global_edit": global_edit}


__all__ = ["ChannelRelevance", "GlobalDirectionOutput", "InversionOutput", "LatentEditOutput", "StyleCLIPPipeline",
           "get_lr", "make_ui_functions", "noise_regularize"]
