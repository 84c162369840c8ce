"""CLIPasso: photo → abstract line sketch of a few black Bézier strokes, several seeds optimised in one batch.

Follows Vinker et al. 2022, "CLIPasso: Semantically-Aware Object Sketching" (SIGGRAPH, arXiv:2202.05822) and its
code (github.com/yael-vinker/CLIPasso: `models/painter_params.py`, `models/loss.py`, `painterly_rendering.py`):

- strokes: 16 open paths of one cubic segment, black, width 1.5 (a diffvg half-width: 3 px drawn, as here); each
  starts at a sampled pixel and walks 3 more control points by 0.05 · (U - 0.5) of the canvas; only the points are
  optimised (Adam, lr 1.0);
- initialisation: the ViT's CLS→patch attention averaged over heads and blocks (the repo's `interpret`), times
  an XDoG edge map ((1 − XDoG), k = 10, γ 0.98, φ 200, ε −0.1, σ 0.8 px at 224 px — scaled with the canvas, since
  on a small canvas σ·k would blur a whole object into one "line" —, Otsu-binarised), turned into a sampling
  distribution by a softmax with temperature 0.3 over its positive pixels; pixels drawn without replacement.
  With a ResNet-only scorer the map is Grad-CAM on stage 4 (the repo's RN saliency path) — see `relevancy_map`;
- loss: Σ_layers L2 between intermediate activations of sketch and photo (ResNet stages 2 and 3, weight 1 each:
  the repo's `clip_conv_layer_weights` "0,0,1.0,1.0,0") + 0.1 × (1 − cos) of the final embeddings, averaged over
  the unaugmented pair and 4 augmented pairs (RandomPerspective 0.5, fill 0, + RandomResizedCrop scale 0.8) with
  the SAME transform on sketch and photo; a ViT variant uses blocks at 1/3 and 2/3 of the depth when only a ViT
  is loaded (our choice; the repo's ViT path hooks all blocks with per-layer weights);
- 2000 steps, the lowest unaugmented loss kept, early stopping when it stalls; several seeds (the repo runs 0,
  1000, 2000 one after another and keeps the best) are here one batch through the renderer and CLIP.

Optional background removal uses a saliency mask from the same relevancy map (Otsu threshold) instead of U²-Net,
so nothing extra is downloaded. Augmented pairs: each step draws `num_augs` transforms (`CLIPScorer.augment(...,
shared=True)`) from two generators in the same state, one for the sketches and one for the photo, and applies
transform i to every seed's sketch and to the photo. The photo's augmented views are therefore encoded once per
step, not once per seed (the repo, running seeds one after another, draws fresh transforms for each).

On the run protocol (`studio.progress`): `iterate(image, **settings)` yields a `Progress` every step (a PIL preview
of the leading seed every `preview_every` steps) and ends with the `CLIPassoOutput` (send "stop" or close it to end
early with the best so far); `__call__(image, callback=None, **settings)` drains it. Settings and limits are
`CLIPassoConfig`; the task is registered as `clipasso`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from studio.images import resize_crop, to_pil, to_tensor, to_uint8
from studio.media import MAX_FRAMES
from studio.progress import Progress, Result
from studio.render import Scene, Topology, render, to_image, to_svg
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, param, resolve, run_settings


@dataclass
class CLIPassoConfig:
    """Settings of one CLIPasso run: defaults (with where they come from) and limits."""

    num_strokes: int = param(16, 1, 256, ui=(4, 64), label="Abstraction (strokes: fewer = more abstract)",
                             help="CLIPasso repo num_paths 16")
    num_steps: int = param(2000, 1, 10_000, ui=(1, 2000), cpu=300, label="Steps (stops early when stalled)",
                           help="CLIPasso repo num_iter 2001")
    num_seeds: int = param(3, 1, 8, ui=(1, 4), cpu=2, label="Seeds optimised together",
                           help="CLIPasso's run_object_sketching.py runs seeds 0, 1000, 2000 and keeps the best")
    stroke_width: float = param(3.0, 0.25, 20.0, ui=(0.5, 6.0), step=0.25, label="Stroke width (px)",
                                help="full width; CLIPasso repo: 1.5, a diffvg half-width (diffvg's `stroke_width` "
                                     "is half the drawn width), so 3 px")
    mask_background: bool = param(False, label="Remove background (CLIP saliency)",
                                  help="whiten the background with the scorer's saliency (Otsu on the relevancy "
                                       "map) instead of U²-Net")
    early_stopping: bool = param(True, help="stop when the loss stalls (the repo's eval-interval check)",
                                 control=False)
    seed: int = param(0, 0, SEED_MAX, label="Seed", help="the first seed; the others add seed_stride (mod 2³²)")
    canvas_size: int = param(224, 16, 1024, help="CLIPasso repo image_scale 224", control=False)
    preview_every: int = param(0, 0, 10_000, help="steps between previews; 0: about 60 per run", control=False)
    num_augs: int = param(4, 0, 32, help="CLIPasso repo num_aug_clip 4", control=False)
    seed_stride: int = param(1000, 1, 1_000_000, help="CLIPasso repo: seeds 0, 1000, 2000", control=False)
    radius: float = param(0.05, 0.0, 1.0, help="CLIPasso painter_params.get_path: control points walk "
                                               "0.05 · (U − 0.5)", control=False)
    lr: float = param(1.0, 0.0, 100.0, help="CLIPasso repo: points lr 1.0", control=False)
    softmax_temp: float = param(0.3, 1e-3, 10.0, help="CLIPasso repo", control=False)
    distortion: float = param(0.5, 0.0, 1.0, help="CLIPasso repo RandomPerspective(distortion_scale=0.5, fill=0)",
                              control=False)
    crop: tuple = param((0.8, 0.8), help="CLIPasso repo RandomResizedCrop(scale=(0.8, 0.8)); its ratio is 1, ours "
                                         "3/4-4/3", control=False)
    aug_fill: float = param(0.0, 0.0, 1.0, help="CLIPasso repo RandomPerspective(fill=0)", control=False)
    resnet_layers: tuple = param((2, 3), help="CLIPasso repo clip_conv_layer_weights '0,0,1.0,1.0,0'",
                                 control=False)
    layer_weight: float = param(1.0, 0.0, 100.0, help="CLIPasso repo", control=False)
    semantic_weight: float = param(0.1, 0.0, 100.0, help="CLIPasso repo clip_fc_loss_weight 0.1", control=False)
    xdog_k: float = param(10.0, 1.0, 100.0, help="CLIPasso repo XDoG_()(im, k=10)", control=False)
    xdog_sigma: float = param(0.8, 0.1, 10.0, help="CLIPasso repo, pixels of its 224-pixel canvas; scaled with our "
                                                   "canvas so edges stay edges", control=False)
    eval_interval: int = param(10, 1, 1000, help="CLIPasso repo eval_interval 10", control=False)
    min_delta: float = param(1e-5, 0.0, None, help="CLIPasso repo: early-stopping threshold on the loss change",
                             control=False)
    patience: int = param(10, 1, 1000, help="ours: evaluations without an improvement above min_delta before "
                                            "stopping (100 steps)", control=False)


@dataclass
class CLIPassoOutput(Result):
    """A finished (or stopped) CLIPasso run; the kept seed is the one with the lowest loss. scores: clip_score
    (sketch↔photo CLIPScore, 0-100), loss, loss_init of the kept seed."""

    task = "clipasso"
    svg: str = ""
    seeds: list[int] = field(default_factory=list)
    seed_losses: list[float] = field(default_factory=list)  # best loss of each seed
    strokes: np.ndarray | None = None  # (num_strokes, 4, 2) control points of the kept sketch, pixels
    photo: Image.Image | None = None  # the photo as the loss saw it (resized, background removed if asked)
    relevancy: np.ndarray | None = None  # (H, W) in [0, 1]: the initialisation's sampling map before the softmax
    losses: list[float] = field(default_factory=list)  # the kept seed's unaugmented loss at every step
    early_stopped: bool = False  # the loss stalled (`stopped` is a stop by the caller)


# ---------------------------------------------------------------------------------------------------------- maps
def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) Gaussian filter like scipy.ndimage.gaussian_filter (mode 'reflect' = numpy 'symmetric', truncate 4)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(img.astype(np.float64), r, mode="symmetric")
    t = torch.from_numpy(padded)[None, None]
    kt = torch.from_numpy(k)
    t = F.conv2d(t, kt.view(1, 1, 1, -1))
    t = F.conv2d(t, kt.view(1, 1, -1, 1))
    return t[0, 0].numpy()


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (Otsu 1979) over a 256-bin histogram, as skimage.filters.threshold_otsu computes it."""
    v = values.ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centres) / np.maximum(w1, 1)
    m2 = (np.cumsum((hist * centres)[::-1]) / np.maximum(w2[::-1], 1))[::-1]
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[:-1][np.argmax(var)])


def xdog_edges(image: np.ndarray, k: float = 10.0, gamma: float = 0.98, phi: float = 200.0, eps: float = -0.1,
               sigma: float = 0.8) -> np.ndarray:
    """(H, W) float {0, 1}: 1 on the dark lines of an XDoG (Winnemöller et al. 2012) of an (H, W, 3) image in [0, 1].

    The repo's `XDoG_` (binarised with Otsu) returns 1 for paper and 0 for lines; this returns its complement,
    the edge map that CLIPasso multiplies with the attention map.
    """
    gray = image @ np.array([0.2125, 0.7154, 0.0721])  # skimage rgb2gray weights
    diff = _gaussian_blur(gray, sigma) - gamma * _gaussian_blur(gray, sigma * k)
    out = np.where(diff < eps, 1.0, 1.0 + np.tanh(phi * diff))
    out = out - out.min()
    if out.max() > 0:
        out = out / out.max()
    paper = out >= otsu_threshold(out)
    return (~paper).astype(np.float32)


def relevancy_map(scorer: CLIPScorer, image: torch.Tensor, size: int) -> np.ndarray:
    """(size, size) map in [0, 1] of where `scorer` looks in `image` (1, 3, size, size).

    ViT towers: the CLS token's attention to each patch, clamped at 0, averaged over heads and blocks (CLIPasso's
    `interpret`). Other towers (ResNets): Grad-CAM (Selvaraju et al. 2017) on the last stage for the objective
    −cos(e(image), e(blank canvas)), i.e. what makes the photo differ from an empty white page — CLIPasso's RN
    saliency is Grad-CAM on `layer4` too, there driven by a text prompt the photo tool does not have.
    """
    visual = scorer.model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    grid = None
    if blocks is not None:
        attn = _vit_cls_attention(scorer, image, blocks)  # (num_patches,) or None
        if attn is not None:
            g = int(round(math.sqrt(attn.numel())))
            grid = attn.view(1, 1, g, g)
    if grid is None:
        grid = _gradcam(scorer, image)
    m = F.interpolate(grid.float(), size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    m = m - m.min()
    return (m / m.max() if float(m.max()) > 0 else torch.ones_like(m)).cpu().numpy()


def _vit_cls_attention(scorer: CLIPScorer, image: torch.Tensor, blocks) -> torch.Tensor | None:
    """Mean over blocks and heads of softmax(q kᵀ/√d)[CLS, patches], recomputed from each block's attention input."""
    inputs: list[torch.Tensor] = []
    hooks = [blk.attn.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for blk in blocks]
    try:
        with torch.no_grad():
            scorer.encode_image(image)
    finally:
        for h in hooks:
            h.remove()
    maps = []
    for blk, x in zip(blocks, inputs):
        mha = blk.attn
        if not isinstance(mha, torch.nn.MultiheadAttention) or mha.in_proj_weight is None:
            return None
        if not mha.batch_first:
            x = x.transpose(0, 1)
        x = x.float()  # (B, N, D)
        d, h = mha.embed_dim, mha.num_heads
        w, b = mha.in_proj_weight.float(), mha.in_proj_bias.float() if mha.in_proj_bias is not None else None
        q = F.linear(x, w[:d], None if b is None else b[:d])
        k = F.linear(x, w[d:2 * d], None if b is None else b[d:2 * d])
        q = q.view(x.shape[0], -1, h, d // h).transpose(1, 2)
        k = k.view(x.shape[0], -1, h, d // h).transpose(1, 2)
        a = (q @ k.transpose(-1, -2) / math.sqrt(d // h)).softmax(-1)  # (B, heads, N, N)
        maps.append(a.clamp(min=0).mean(1)[0, 0, 1:])
    if not maps:
        return None
    cls = torch.stack(maps).mean(0)
    g = int(round(math.sqrt(cls.numel())))
    return cls if g * g == cls.numel() else None


def _gradcam(scorer: CLIPScorer, image: torch.Tensor) -> torch.Tensor:
    """(1, 1, h, w) Grad-CAM of the last stage (ResNet stage 4 / last ViT block as a token grid)."""
    visual = scorer.model.visual
    last = 4 if hasattr(visual, "layer4") else len(visual.transformer.resblocks) - 1
    with torch.no_grad():
        blank = scorer.encode_image(torch.ones_like(image))
    x = image.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        emb, (act,) = scorer.image_activations(x, layers=(last,))
        act.retain_grad()
        (-(emb * blank).sum()).backward()
    a, g = act.detach(), act.grad
    if a.ndim == 3:  # ViT tokens (B, N, D) without a square grid of patches: drop the first token
        n = a.shape[1] - 1
        s = int(round(math.sqrt(n)))
        a, g = a[:, 1:1 + s * s].transpose(1, 2), g[:, 1:1 + s * s].transpose(1, 2)
        a, g = a.reshape(1, -1, s, s), g.reshape(1, -1, s, s)
    weights = g.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * a).sum(1, keepdim=True))


def sampling_map(relevancy: np.ndarray, edges: np.ndarray, temperature: float) -> np.ndarray:
    """CLIPasso's `set_inds_clip`: p ∝ softmax((edges · relevancy) / τ) over the positive pixels, 0 elsewhere."""
    m = edges * relevancy
    if not (m > 0).any():  # no edges where CLIP looks (e.g. a flat photo): fall back to the relevancy alone
        m = relevancy.copy()
    if not (m > 0).any():
        m = np.ones_like(relevancy)
    m = (m - m.min()) / max(m.max() - m.min(), 1e-12) if m.max() > m.min() else m
    pos = m > 0
    p = np.zeros_like(m, dtype=np.float64)
    z = m[pos] / temperature
    z = np.exp(z - z.max())
    p[pos] = z / z.sum()
    return p


# ---------------------------------------------------------------------------------------------------- pipeline
class CLIPassoPipeline:
    """Photo → line sketch (CLIPasso).

    `scorer` gives the attention map for the initialisation and the final CLIP score (a ViT, as in the paper);
    `loss_scorer` gives the geometric and semantic loss (a ResNet such as RN101, as in the paper); it defaults to
    `scorer`, and with a ViT the loss reads transformer blocks instead of ResNet stages.

    >>> pipe = CLIPassoPipeline(get_scorer("ViT-B-32/openai"), get_scorer("RN101/openai"))  # doctest: +SKIP
    >>> out = pipe("horse.png", num_strokes=16, num_steps=2000, num_seeds=3, seed=0)  # doctest: +SKIP
    """

    def __init__(self, scorer: CLIPScorer, loss_scorer: CLIPScorer | None = None, config: CLIPassoConfig | None = None,
                 backend: str = "torch"):
        self.scorer = scorer
        self.loss_scorer = loss_scorer or scorer
        self.config = config or CLIPassoConfig()
        self.backend = backend

    @classmethod
    def from_pretrained(cls, spec: str | None = None, loss_spec: str | None = None, device: str | None = None,
                        **kwargs: Any) -> "CLIPassoPipeline":
        scorer = get_scorer(spec, device=device)
        return cls(scorer, get_scorer(loss_spec, device=device) if loss_spec else None, **kwargs)

    def __call__(self, image: Any, *, callback: Callable | None = None, **settings: Any) -> CLIPassoOutput:
        """Run `iterate(image, **settings)` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iterate(image, **settings), callback)

    @property
    def geometric_layers(self) -> tuple[int, ...]:
        visual = self.loss_scorer.model.visual
        if hasattr(visual, "layer1"):
            return self.config.resnet_layers
        n = len(visual.transformer.resblocks)
        return tuple(sorted({n // 3, min(n - 1, (2 * n) // 3)}))  # e.g. blocks 4 and 8 of ViT-B-32's 12

    def load_photo(self, image: Any, canvas_size: int) -> torch.Tensor:
        """(1, 3, S, S) in [0, 1]: shortest side to S (bicubic, antialiased), centre crop, as CLIPasso's transforms."""
        x = to_tensor(image, "image")
        if x.shape[0] != 1:
            raise ValueError(f"`image` must be one image, got a batch of {x.shape[0]}")
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"`image` is {x.shape[-1]}×{x.shape[-2]} pixels; each side must be at least 16")
        if not bool(torch.isfinite(x).all()) or float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3:
            raise ValueError("`image` tensor values must be finite and in [0, 1]")
        return resize_crop(x.float(), canvas_size).clamp(0, 1)

    def iterate(self, image: Any, **settings: Any) -> Iterator[Progress | CLIPassoOutput]:
        """Sketch `image` (PIL, path, bytes, array or (1, 3, H, W) tensor); yields progress, then the output.

        settings: any `CLIPassoConfig` field. num_strokes is the abstraction level (fewer strokes, more abstract);
        num_seeds seeds (seed, seed + seed_stride, ...) are optimised together in one batch and the lowest loss is
        kept; mask_background whitens the background using the scorer's saliency.
        """
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.config, settings)
        num_strokes, total, num_seeds, canvas_size = cfg.num_strokes, cfg.num_steps, cfg.num_seeds, cfg.canvas_size
        num_augs = cfg.num_augs
        if num_strokes > canvas_size * canvas_size:
            raise ValueError(f"`num_strokes` must be at most the canvas' pixel count, got {num_strokes}")
        photo = self.load_photo(image, canvas_size)  # (1, 3, S, S) on the CPU
        dev = self.loss_scorer.device
        every = cfg.preview_every or max(1, total // 60)
        seeds = [(cfg.seed + cfg.seed_stride * i) % (SEED_MAX + 1) for i in range(num_seeds)]

        # 2. initialise strokes: sample start pixels from attention × edges, one generator per seed
        photo_dev = photo.to(self.scorer.device)
        relevancy = relevancy_map(self.scorer, photo_dev, canvas_size)
        if cfg.mask_background:
            mask = (relevancy > otsu_threshold(relevancy)).astype(np.float32)
            mask = np.clip(_gaussian_blur(mask, max(1.0, canvas_size / 112)) * 1.5, 0, 1)
            m = torch.from_numpy(mask)[None, None]
            photo = photo * m + (1 - m)
            photo_dev = photo.to(self.scorer.device)
            relevancy = relevancy_map(self.scorer, photo_dev, canvas_size) * mask
        edges = xdog_edges(photo[0].permute(1, 2, 0).numpy().astype(np.float64), k=cfg.xdog_k,
                           sigma=cfg.xdog_sigma * canvas_size / 224)
        probs = torch.from_numpy(sampling_map(relevancy, edges, cfg.softmax_temp).ravel())
        npos = int((probs > 0).sum())
        points = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            if npos >= num_strokes:
                idx = torch.multinomial(probs, num_strokes, replacement=False, generator=g)
            else:  # fewer candidate pixels than strokes: draw with replacement rather than fail
                idx = torch.multinomial(probs, num_strokes, replacement=True, generator=g)
            start = torch.stack([idx % canvas_size, idx // canvas_size], -1).double() / canvas_size  # (N, 2) x, y
            walk = cfg.radius * (torch.rand(num_strokes, 3, 2, generator=g, dtype=torch.float64) - 0.5)
            pts = torch.cat([start[:, None], start[:, None] + torch.cumsum(walk, 1)], 1)  # (N, 4, 2)
            points.append(pts.float().view(-1, 2) * canvas_size)
        topo = Topology((1,) * num_strokes, (False,) * num_strokes)
        pts0 = torch.stack(points).to(dev)  # (S, N·4, 2)
        pts = pts0.clone().requires_grad_(True)
        widths = torch.full((num_seeds, num_strokes), cfg.stroke_width, device=dev)
        colours = torch.zeros(num_seeds, num_strokes, 4, device=dev)
        colours[..., 3] = 1.0  # black, opaque

        def draw(p: torch.Tensor) -> torch.Tensor:
            s = Scene(topo, p, widths[: p.shape[0]], colours[: p.shape[0]], width=canvas_size, height=canvas_size)
            return to_image(render(s, backend=self.backend))  # (S, 3, H, W)

        # Photo features: the unaugmented view once; augmented views each step with the sketches' transforms.
        layers = self.geometric_layers
        side = self.loss_scorer.image_size

        def fit(x: torch.Tensor) -> torch.Tensor:
            # the unaugmented views join the augmented ones (already side²) in one batch; resize as preprocess does
            if x.shape[-1] == side:
                return x
            return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True)

        target = photo.to(dev)
        with torch.no_grad():
            y_emb, y_acts = self.loss_scorer.image_activations(fit(target), layers)

        def loss_fn(sk: torch.Tensor, aug_gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
            """(S,) loss per seed (mean over views) and (S,) loss of the unaugmented pair alone."""
            n_s = sk.shape[0]
            xs = fit(sk)
            if aug_gen is not None and num_augs:
                g_photo = torch.Generator().set_state(aug_gen.get_state())  # same draws → same transforms
                # The seeds share each step's transforms, so the photo's views are encoded once, not per seed.
                xs = torch.cat([xs, self.loss_scorer.augment(sk, num_augs, cfg.distortion, tuple(cfg.crop),
                                                             generator=aug_gen, fill=cfg.aug_fill, shared=True)])
                with torch.no_grad():
                    ya = self.loss_scorer.augment(target, num_augs, cfg.distortion, tuple(cfg.crop),
                                                  generator=g_photo, fill=cfg.aug_fill, shared=True)
                    ya_emb, ya_acts = self.loss_scorer.image_activations(ya, layers)  # (V, ...) one per transform
                ys_emb = torch.cat([y_emb.expand(n_s, -1), ya_emb.repeat_interleave(n_s, dim=0)])
                ys_acts = [torch.cat([a.expand(n_s, *a.shape[1:]), b.repeat_interleave(n_s, dim=0)])
                           for a, b in zip(y_acts, ya_acts)]
            else:
                ys_emb = y_emb.expand(n_s, -1)
                ys_acts = [a.expand(n_s, *a.shape[1:]) for a in y_acts]
            x_emb, x_acts = self.loss_scorer.image_activations(xs, layers)
            per_view = sum(cfg.layer_weight * (xa - ya).pow(2).flatten(1).mean(1) for xa, ya in zip(x_acts, ys_acts))
            per_view = per_view + cfg.semantic_weight * (1 - (x_emb * ys_emb).sum(-1))  # (V·S,), view-major
            per_view = per_view.view(-1, n_s)  # (V, S)
            return per_view.mean(0), per_view[0].detach()

        opt = torch.optim.Adam([pts], lr=cfg.lr)  # repo: only the points are optimised
        aug_gen = torch.Generator().manual_seed(seeds[0] + 1)
        best_loss = torch.full((num_seeds,), float("inf"))
        best_pts = pts0.detach().clone()
        histories: list[list[float]] = [[] for _ in seeds]
        seed_frames: list[list[np.ndarray]] = [[] for _ in seeds]
        with torch.no_grad():
            sk0 = draw(pts0)
            init_loss = loss_fn(sk0, None)[1].cpu()
        for i in range(num_seeds):
            seed_frames[i].append(to_uint8(sk0[i]))
        t_setup = time.perf_counter() - t0

        # 3. optimise all seeds in one batch; keep each seed's lowest unaugmented loss
        stopped = early = False
        last_improved, best_overall = 0, float("inf")
        step = 0
        t1 = time.perf_counter()
        with oom_guard("CLIPasso"):
            for step in range(1, total + 1):
                opt.zero_grad(set_to_none=True)
                sk = draw(pts)
                loss, plain = loss_fn(sk, aug_gen)  # `plain` is the loss of the points before this update
                loss.sum().backward()  # seeds are independent: the sum gives each its own gradient
                plain = plain.cpu()
                better = plain < best_loss
                if bool(better.any()):
                    best_loss = torch.where(better, plain, best_loss)
                    best_pts[better.to(dev)] = pts.detach()[better.to(dev)]
                for i in range(num_seeds):
                    histories[i].append(float(plain[i]))
                opt.step()
                if cfg.early_stopping and step % cfg.eval_interval == 0:  # repo: stop when the eval loss stalls
                    cur = float(best_loss.min())
                    if best_overall - cur > cfg.min_delta:
                        best_overall, last_improved = cur, step
                    elif step - last_improved >= cfg.patience * cfg.eval_interval:
                        early = True
                preview = None
                lead = int(best_loss.argmin())
                if step % every == 0 or step == total or early:
                    with torch.no_grad():
                        shown = draw(best_pts)
                    for i in range(num_seeds):
                        if len(seed_frames[i]) < MAX_FRAMES:
                            seed_frames[i].append(to_uint8(shown[i]))
                    preview = to_pil(shown[lead])
                cmd = yield Progress(step, total, preview, {"loss": float(best_loss[lead])})
                if cmd == "stop":
                    stopped = True
                    break
                if early:
                    break
        t_opt = time.perf_counter() - t1

        # 4. package the lowest-loss seed
        k = int(best_loss.argmin()) if bool(torch.isfinite(best_loss).any()) else 0
        if not math.isfinite(float(best_loss[k])):  # stopped before the first step finished
            best_loss[k] = init_loss[k]
        final = Scene(topo, best_pts[k:k + 1].detach(), widths[:1], colours[:1], width=canvas_size,
                      height=canvas_size)
        with torch.no_grad():
            img = draw(best_pts[k:k + 1])
            sims = self.scorer.encode_image(img.to(self.scorer.device)) @ self.scorer.encode_image(photo_dev).t()
        frames = seed_frames[k] + [to_uint8(img)]
        yield CLIPassoOutput(
            image=to_pil(img), svg=to_svg(final), frames=frames, seed=seeds[k], seeds=seeds,
            seed_losses=[float(v) for v in best_loss],
            scores={"clip_score": 100.0 * max(float(sims[0, 0]), 0.0), "loss": float(best_loss[k]),
                    "loss_init": float(init_loss[k])},
            timings={"setup_s": t_setup, "optimise_s": t_opt, "total_s": time.perf_counter() - t0,
                     "per_step_s": t_opt / max(1, step)},
            settings=run_settings(cfg), strokes=best_pts[k].detach().cpu().view(num_strokes, 4, 2).numpy(),
            photo=to_pil(photo),
            relevancy=relevancy, losses=histories[k], steps_run=step, stopped=stopped, early_stopped=early,
            notice=self.scorer.notice)


register(Task(
    name="clipasso", title="Photo → sketch (CLIPasso)", config=CLIPassoConfig, pipeline=CLIPassoPipeline,
    method="iterate", models=("clip", "loss_clip"),
    inputs=(Input("image", "image", help="the photo to sketch"),),
    load=lambda clip=None, loss_clip=None, device=None: CLIPassoPipeline.from_pretrained(clip, loss_clip,
                                                                                         device=device)))
