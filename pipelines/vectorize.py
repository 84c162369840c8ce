"""Vectorize: a picture → an editable SVG of filled Bézier shapes (or painterly strokes), fitted through our renderer.

Filled shapes follow LIVE (Ma et al. 2022, "Towards Layer-wise Image Vectorization", CVPR; code
github.com/Picsart-AI-Research/LIVE-Layerwise-Image-Vectorization, `main.py`, `xing_loss.py`, `config/base.yaml`):

- paths are added layer by layer, 1, 2, 4, ... at a time (LIVE's `exp` path schedule, capped per layer), every path
  closed with 4 cubic segments, each layer optimised for `num_steps` steps with all earlier paths still trainable
  (LIVE `record: True`): Adam, points lr 1, colours lr 0.01, each layer's rate decaying linearly by 0.4 per
  `num_steps` (LIVE's `linear_decay_lrlambda_f`);
- each new path starts where the error is largest: LIVE quantises the error map and takes the largest connected
  region; we label the pixels that are still wrong by the picture's colour cluster (k-means) and take the connected
  regions with the largest summed error, so a region is one colour of the picture. LIVE starts a 5-pixel circle at
  the region's centre; we start the path on the region's outline (its farthest pixel along 12 rays from the region
  pixel nearest its centroid) with the region's mean colour, so a layer's steps refine a shape instead of growing
  one (far fewer steps for the same error, which is what a CPU needs);
- loss: LIVE's UDF-weighted squared error — each pixel's error weighted by (1 − d/10)⁺, d its distance in pixels to
  the outline of the newest paths, accumulated over the layers — plus LIVE's self-intersection ("Xing") term with
  weight 0.01 × its 1e-3 scale. `udf_mix` < 1 blends in the plain error (0: plain MSE).

Strokes (`mode="stroke"`) is DiffVG's painterly fitting (Li et al. 2020, `apps/painterly_rendering.py`): open
strokes with widths and RGBA colours, squared error; they start, like the shapes, on the regions with the largest
error (along the region's main axis, as wide as the region), on a first filled path that covers the canvas.

Our additions: `paint="gradient"` gives every shape a linear gradient (two stops, its axis along the region's main
axis, stops fitted to the region's colours); `target_psnr` adds paths until the drawing reaches that PSNR
(`num_paths` is then the most it may use); an optional CLIP term (CLIPasso's idea): `clip_weight` × (1 − cosine) of
the drawing's augmented views to the input picture (or to `clip_prompt`) through the shared scorer, so that few paths
keep what the picture shows. The result is the drawing with the lowest squared error seen (a Stop keeps it), with
invisible and degenerate paths removed; its SVG holds one `<path>` per shape in drawing order and no background
element, and `from_svg` and resvg draw it like `image`.

On the run protocol (`studio.progress`): `iterate(image, **settings)` yields a `Progress` each step (metrics: psnr,
paths, loss; a preview every `preview_every` steps and at the end of each layer) and ends with the
`VectorizeOutput`; `__call__(image, callback=None, **settings)` drains it. Settings are `VectorizeConfig`; the task
is registered as `vectorize`. No model is needed unless `clip_weight` > 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from pipelines.registry import register
from studio.images import load_image, to_pil, to_uint8
from studio.media import MAX_FRAMES
from studio.progress import Progress, Result
from studio.render import Gradient, Scene, Topology, render, to_image, to_svg
from studio.render.cost import MAX_RENDER_WORK, render_work
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings

MODES = ("fill", "stroke")
PAINTS = ("solid", "gradient")
MIN_ALPHA = 1 / 255  # a path fainter than this draws nothing at 8 bits and is dropped
MIN_AREA = 0.5  # px²: a closed path enclosing less is degenerate and dropped


@dataclass
class VectorizeConfig:
    """Settings of one Vectorize run: defaults (with where they come from) and limits."""

    num_paths: int = param(64, 1, 1024, ui=(1, 256), cpu=32, label="Paths",
                           help="shapes (or strokes) in the SVG, at most; LIVE's figures use 8 to 256")
    mode: str = param("fill", choices=MODES, label="Mode",
                      help="fill: closed filled shapes added layer by layer (LIVE); stroke: painterly strokes "
                           "(DiffVG's painterly rendering)")
    paint: str = param("solid", choices=PAINTS, label="Fill",
                       help="solid colours (LIVE) or a linear gradient per shape (two stops)")
    num_steps: int = param(150, 1, 5000, ui=(1, 1000), cpu=60, label="Steps per layer",
                           help="optimisation steps after each layer of paths is added; LIVE: 500 from a 5-pixel "
                                "circle, ours start on the region's outline and need fewer")
    target_psnr: float = param(0.0, 0.0, 60.0, ui=(0.0, 45.0), step=0.5, label="Target PSNR (dB, 0: off)",
                               help="add paths until the drawing reaches this PSNR against the picture (num_paths "
                                    "is then the most it may use); 0: use num_paths")
    canvas_size: int = param(256, 16, 1024, ui=(64, 512), step=16, label="Canvas (longest side, px)",
                             help="the picture's longest side is fitted into this many pixels (never enlarged); "
                                  "the SVG has the same size")
    seed: int = param(0, 0, SEED_MAX, label="Seed", help="k-means colour clusters and the CLIP term's "
                                                          "augmentations draw from it: same seed, same SVG on the CPU")
    clip_weight: float = param(0.0, 0.0, 100.0, ui=(0.0, 5.0), step=0.1, label="CLIP weight (0: off)",
                               help="weight of 1 − CLIP cosine to the picture (or to clip_prompt), CLIPasso's idea: "
                                    "few paths keep what the picture shows; needs the CLIP model")
    clip_prompt: str = param("", label="CLIP prompt (optional)",
                             help="with clip_weight > 0: match this text instead of the picture")
    num_segments: int = param(4, 1, 16, help="cubic segments per path; LIVE num_segments 4", control=False)
    max_layer_paths: int = param(32, 1, 256, help="paths added in one layer at most; LIVE's exp2 schedules cap "
                                                   "16-32", control=False)
    num_colors: int = param(12, 2, 64, help="k-means colour clusters that split the error map into regions "
                                             "(ours; LIVE quantises the error itself)", control=False)
    blur: float = param(0.0, 0.0, 16.0, help="Gaussian blur (pixels of a 256-pixel canvas) before the colour "
                                              "clusters are found, so a photo's texture does not cut regions "
                                              "into specks (ours)", control=False)
    min_error: float = param(0.003, 0.0, 3.0, help="a pixel whose squared error summed over RGB is below this is "
                                                    "fitted already (LIVE nodiff_thres 0.1 on its error map)",
                             control=False)
    udf_mix: float = param(1.0, 0.0, 1.0, help="1: LIVE's UDF-weighted loss; 0: plain squared error; between: a "
                                                "blend", control=False)
    udf_truncate: float = param(10.0, 1.0, 100.0, help="pixels beyond this distance from the newest outlines get "
                                                        "no UDF weight; LIVE get_sdf truncate 10", control=False)
    xing_weight: float = param(1e-5, 0.0, 1.0, help="LIVE's self-intersection loss: xing_loss_weight 0.01 × its "
                                                     "scale 1e-3", control=False)
    lr_points: float = param(1.0, 0.0, 100.0, help="LIVE lr_base point 1", control=False)
    lr_colors: float = param(0.01, 0.0, 10.0, help="LIVE lr_base color 0.01", control=False)
    lr_decay: float = param(0.4, 0.0, 1.0, help="each layer's rates fall linearly by this factor every num_steps; "
                                                 "LIVE linear_decay_lrlambda_f(num_iter, 0.4)", control=False)
    stroke_width: float = param(4.0, 0.5, 100.0, help="strokes mode: widest a stroke starts; DiffVG painterly "
                                                       "starts at 1-2 px from random places, ours on regions",
                                control=False)
    max_stroke_width: float = param(32.0, 0.5, 200.0, help="strokes mode: widths clamped to [0.5, this]",
                                    control=False)
    lr_widths: float = param(0.1, 0.0, 100.0, help="strokes mode; DiffVG painterly stroke_width lr 0.1",
                             control=False)
    num_augs: int = param(4, 1, 32, help="augmented views for the CLIP term; CLIPDraw/CLIPasso 4", control=False)
    preview_every: int = param(0, 0, 10_000, help="steps between previews and video frames; 0: about 60 per run",
                               control=False)


@dataclass
class VectorizeOutput(Result):
    """A finished (or stopped) Vectorize run: `image` (the SVG as our renderer draws it, over white), `svg`,
    `target` (the picture as fitted, canvas-sized), scores: psnr (dB) and mse of `image` against `target`,
    num_paths (in the SVG), best_step; `layers`: (paths, psnr) at the end of each layer."""

    task = "vectorize"
    svg: str = ""
    target: Image.Image | None = None
    layers: list[tuple[int, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # the mse of every step's drawing

    def save(self, folder=None, video: str = "mp4", fps: float = 12.0):
        """`save()`'s files plus `vectorize-sheet.png`: the picture beside its SVG (the contact sheet shows it)."""
        paths = super().save(folder, video, fps)
        if self.target is not None and self.image is not None and "png" in paths:
            from studio.media import save_png

            w, h = self.image.size
            sheet = Image.new("RGB", (2 * w + 4, h), "white")
            sheet.paste(self.target.resize((w, h)), (0, 0))
            sheet.paste(self.image, (w + 4, 0))
            paths["sheet"] = save_png(sheet, paths["png"].parent / f"{self.task}-sheet.png", self.metadata())
        return paths


# ----------------------------------------------------------------------------------------------------- helpers
def layer_sizes(num_paths: int, cap: int) -> list[int]:
    """LIVE's `exp` path schedule: 1, 2, 4, ... paths per layer, at most `cap`, summing to `num_paths`."""
    sizes, n = [], 1
    while sum(sizes) < num_paths:
        sizes.append(min(n, cap, num_paths - sum(sizes)))
        n *= 2
    return sizes


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else 99.0


def kmeans(pixels: np.ndarray, k: int, rng: np.random.Generator, iters: int = 15) -> np.ndarray:
    """(k', 3) colour centres of (N, 3) pixels: k-means++ seeding, Lloyd iterations (k' ≤ k: duplicates dropped)."""
    x = pixels.astype(np.float64)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), 1)
        if d.sum() <= 1e-12:
            break
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.array(centres)
    for _ in range(iters):
        lab = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            if (lab == j).any():
                c[j] = x[lab == j].mean(0)
    return c


def xing_loss(points: torch.Tensor, num_segments: int) -> torch.Tensor:
    """LIVE's self-intersection term for closed paths of `num_segments` cubics, points (P, 3·num_segments, 2):
    per segment, the first and last control legs should turn the same way as the first and middle ones."""
    x = torch.cat([points, points[:, :1]], 1)  # (P, 3n+1, 2)
    legs = x[:, 1:] - x[:, :-1]  # (P, 3n, 2)
    a, b, c = legs[:, 0::3], legs[:, 1::3], legs[:, 2::3]  # (P, n, 2) each

    def sine(u, v):
        return (u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]) / (u.norm(dim=-1) * v.norm(dim=-1) + 1e-8)

    direct = (sine(a, b) >= 0).float()
    s13 = sine(a, c)
    per_seg = direct * torch.relu(-s13) + (1 - direct) * torch.relu(s13)
    return per_seg.mean(1).mean() * 1.0


def bezier_circle(centre: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(3n, 2) control points on rays from `centre` at `angles` with lengths `radii` (LIVE's circle, reshaped)."""
    return centre[None] + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], -1)


# ---------------------------------------------------------------------------------------------------- pipeline
class VectorizePipeline:
    """Picture → SVG (LIVE's layer-wise filled shapes, or painterly strokes). No model needed; `scorer` (or
    `clip_spec`, loaded on first use) only for the optional CLIP term.

    >>> pipe = VectorizePipeline()  # doctest: +SKIP
    >>> out = pipe("logo.png", num_paths=64, seed=0)  # doctest: +SKIP
    >>> out.save("logo/")  # vectorize.svg, vectorize.png, vectorize-sheet.png, vectorize.mp4  # doctest: +SKIP
    """

    def __init__(self, scorer: CLIPScorer | None = None, config: VectorizeConfig | None = None,
                 clip_spec: str | None = None, device: str | None = None, backend: str = "torch"):
        self.scorer = scorer
        self.config = config or VectorizeConfig()
        self.clip_spec = clip_spec
        self.device = torch.device(device) if device not in (None, "auto") else (
            scorer.device if scorer is not None else torch.device("cpu"))
        self.backend = backend

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None, **kwargs: Any) -> VectorizePipeline:
        """A pipeline whose CLIP (`spec`) loads only when a run asks for the CLIP term."""
        from studio.device import pick_device

        return cls(clip_spec=spec, device=str(pick_device(device)), **kwargs)

    def get_scorer(self) -> CLIPScorer:
        if self.scorer is None:
            self.scorer = get_scorer(self.clip_spec, device=self.device)
        return self.scorer

    def __call__(self, image: Any, *, callback: Callable | None = None, **settings: Any) -> VectorizeOutput:
        """Run `iterate(image, **settings)` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iterate(image, **settings), callback)

    def check_inputs(self, image: Any, settings: dict[str, Any]) -> tuple[torch.Tensor, VectorizeConfig]:
        """The picture as (1, 3, H, W) in [0, 1] on the canvas, and the resolved config; ValueError naming the
        argument and the value for anything wrong, before any work."""
        cfg = resolve(self.config, settings)
        if cfg.clip_prompt:
            cfg.clip_prompt = check_text(cfg.clip_prompt, "clip_prompt")
        if cfg.stroke_width > cfg.max_stroke_width:
            raise ValueError(f"`stroke_width` must be at most `max_stroke_width` ({cfg.max_stroke_width}), got "
                             f"{cfg.stroke_width}")
        img = load_image(image, "image")  # unreadable, too small, or past the pixel limit: refused here
        w, h = img.size
        scale = min(1.0, cfg.canvas_size / max(w, h))
        size = (max(16, round(w * scale)), max(16, round(h * scale)))
        if size != (w, h):
            img = img.resize(size, Image.Resampling.LANCZOS)
        _check_work(cfg, size)
        target = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        return target, cfg

    def iterate(self, image: Any, **settings: Any) -> Iterator[Progress | VectorizeOutput]:
        """Vectorize `image` (PIL, path, bytes or array); yields progress, then the `VectorizeOutput`.

        settings: any `VectorizeConfig` field (num_paths, mode, paint, num_steps, target_psnr, canvas_size, seed,
        clip_weight, clip_prompt, ...)."""
        t0 = time.perf_counter()
        # 1. check inputs (and the render cost of the largest drawing the run may make)
        target, cfg = self.check_inputs(image, settings)
        scorer = self.get_scorer() if cfg.clip_weight > 0 else None
        dev = scorer.device if scorer is not None else self.device
        target = target.to(dev)
        _, _, h, w = target.shape
        rng = np.random.default_rng(cfg.seed)
        sizes = layer_sizes(cfg.num_paths, cfg.max_layer_paths)
        total = len(sizes) * cfg.num_steps
        every = cfg.preview_every or max(1, total // 60)
        tgt_np = target[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)  # (H, W, 3)
        colours = _clusters(tgt_np, cfg.num_colors, rng, cfg.blur * max(w, h) / 256)  # (H, W) cluster labels
        # The first path covers the canvas in the picture's mean colour (the best one colour for the squared error)
        # under strokes always, under shapes unless the commonest colour is white, the canvas itself: a photo's
        # background is seldom one connected region of one colour.
        common = tgt_np[colours == np.bincount(colours.ravel()).argmax()].mean(0)
        use_ground = cfg.mode == "stroke" or float(((common - 1) ** 2).sum()) > cfg.min_error
        ground = tgt_np.reshape(-1, 3).mean(0)
        clip_target = None
        if scorer is not None:
            with torch.no_grad():
                clip_target = (scorer.encode_text([cfg.clip_prompt]) if cfg.clip_prompt
                               else scorer.encode_image(target))
        aug_gen = torch.Generator().manual_seed(cfg.seed)

        # 2. the drawing: layers of paths, each with its own leaf tensors and optimiser (LIVE keeps every layer
        # trainable with its own decaying rate)
        d = _Drawing(cfg, w, h, dev)
        weight = torch.zeros(h, w, device=dev)  # accumulated UDF weights of the layers so far
        best = {"mse": math.inf, "scene": None, "step": 0}
        losses: list[float] = []
        frames: list[np.ndarray] = []
        layers: list[tuple[int, float]] = []
        t_setup = time.perf_counter() - t0
        step, stopped, reached = 0, False, False
        t1 = time.perf_counter()
        with oom_guard("Vectorize"), torch.no_grad():
            current = d.draw(d.scene()) if d.num_paths else torch.ones_like(target)
        for li, n_new in enumerate(sizes):
            # 3. add a layer where the error is largest, initialised from the picture's colour regions there
            err = ((current - target) ** 2).sum(1)[0].cpu().numpy()  # (H, W)
            if float(err.max()) <= cfg.min_error:  # nothing left to fit: more paths would draw nothing
                break
            regions = _regions(err, colours, tgt_np, n_new, cfg.min_error)
            d.add_layer(regions, ground if d.num_paths == 0 and use_ground else None)
            if li == 0 and use_ground:  # the ground has no outline on the canvas: every pixel counts, and its
                loss_weight = torch.ones_like(weight)  # weight is not kept for the layers after it
            else:
                with torch.no_grad():
                    weight = (weight + _udf(d.draw_new_alpha(), cfg.udf_truncate).to(dev)).clamp(max=1.0)
                loss_weight = cfg.udf_mix * weight + (1 - cfg.udf_mix)
            # 4. optimise every path for num_steps steps
            with oom_guard("Vectorize"):
                for t in range(cfg.num_steps):
                    step += 1
                    d.zero_grad()
                    scene = d.scene()
                    img = d.draw(scene)
                    diff = ((img - target) ** 2).sum(1)[0]  # (H, W)
                    mse = float(diff.detach().mean()) / 3
                    loss = (diff * loss_weight).mean()
                    if cfg.mode == "fill" and cfg.xing_weight > 0:
                        loss = loss + cfg.xing_weight * xing_loss(d.closed_points(scene), cfg.num_segments)
                    if scorer is not None:
                        views = scorer.augment(img, cfg.num_augs, generator=aug_gen)
                        loss = loss + cfg.clip_weight * (1 - (scorer.encode_image(views) @ clip_target.t()).mean())
                    if mse < best["mse"]:  # the drawing before this step's update
                        best.update(mse=mse, scene=scene.clone(), step=step - 1)
                    losses.append(mse)
                    loss.backward()
                    d.step(cfg)
                    end_of_layer = t == cfg.num_steps - 1
                    preview = None
                    if step % every == 0 or end_of_layer:
                        with torch.no_grad():
                            current = d.draw(d.scene())
                        preview = to_pil(current)
                        if len(frames) < MAX_FRAMES:
                            frames.append(to_uint8(current))
                    if end_of_layer:
                        cur_mse = float(((current - target) ** 2).mean())
                        if cur_mse < best["mse"]:
                            best.update(mse=cur_mse, scene=d.scene().clone(), step=step)
                        layers.append((d.num_paths, psnr(cur_mse)))
                        reached = cfg.target_psnr > 0 and psnr(best["mse"]) >= cfg.target_psnr
                        last = li == len(sizes) - 1 or reached
                    else:
                        last = False
                    shown_total = step if last else total
                    cmd = yield Progress(step, shown_total, preview, {"psnr": psnr(mse), "paths": d.num_paths,
                                                                      "loss": float(loss.detach())},
                                         stage=f"layer {li + 1}/{len(sizes)}")
                    if cmd == "stop":
                        stopped = True
                        break
            if stopped or reached:
                break
        t_opt = time.perf_counter() - t1

        # 5. package the best drawing, without paths that draw nothing
        final = _prune(best["scene"] if best["scene"] is not None else d.scene().clone())
        with torch.no_grad():
            out = d.draw(final)
            final_mse = float(((out - target) ** 2).mean())
            scores = {"psnr": psnr(final_mse), "mse": final_mse, "num_paths": final.num_paths,
                      "best_step": best["step"]}
            if scorer is not None:
                sims = scorer.encode_image(out) @ clip_target.t()
                scores["clip_score"] = 100.0 * max(float(sims[0, 0]), 0.0)
        frames.append(to_uint8(out))
        yield VectorizeOutput(
            image=to_pil(out), svg=to_svg(final), target=to_pil(target), frames=frames, seed=cfg.seed,
            scores=scores, layers=layers, losses=losses,
            timings={"setup_s": t_setup, "optimise_s": t_opt, "total_s": time.perf_counter() - t0,
                     "per_step_s": t_opt / max(1, step)},
            settings=run_settings(cfg), steps_run=step, stopped=stopped,
            notice=scorer.notice if scorer is not None else None)


# ------------------------------------------------------------------------------------------------ the drawing
class _Drawing:
    """The paths so far: per layer, leaf tensors (points (1, 3n[+1]·k, 2), colours (1, k, 4), widths, gradient
    stops and axes) and an Adam optimiser with LIVE's decaying rate; `scene()` joins them into one `Scene`."""

    def __init__(self, cfg: VectorizeConfig, width: int, height: int, dev: torch.device):
        self.cfg, self.w, self.h, self.dev = cfg, width, height, dev
        self.layers: list[dict[str, Any]] = []
        self.num_paths = 0
        self.new_range = (0, 0)

    # -- building
    def add_layer(self, regions: list[dict], ground: np.ndarray | None) -> None:
        cfg = self.cfg
        n = cfg.num_segments
        stroke = cfg.mode == "stroke"
        pts, cols, widths, stops, axes, kinds = [], [], [], [], [], []
        for i, r in enumerate(regions):
            if ground is not None and i == 0:  # the first path: a filled ground in the picture's commonest colour
                p, closed, width = _rect_points(self.w, self.h, n), True, 0.0
                r = {**r, "colour": ground, "stops": np.stack([ground, ground]),
                     "axis": np.array([0.0, 0.0, self.w, self.h])}
            elif stroke:
                p, closed, width = _stroke_points(r, n, self.w, self.h), False, float(np.clip(r["across"], 0.5,
                                                                                               cfg.stroke_width))
            else:
                p, closed, width = _outline_points(r, n), True, 0.0
            pts.append(p)
            kinds.append(closed)
            widths.append(width)
            cols.append(list(r["colour"]) + [1.0])
            stops.append(r["stops"])
            axes.append(r["axis"])
        layer = {
            "closed": kinds, "k": len(regions),
            "points": torch.tensor(np.concatenate(pts), dtype=torch.float32, device=self.dev)[None],
            "colors": torch.tensor(cols, dtype=torch.float32, device=self.dev)[None],
            "widths": torch.tensor([widths], dtype=torch.float32, device=self.dev),
        }
        trainable = ["points", "colors"] + (["widths"] if stroke else [])
        if cfg.paint == "gradient":
            layer["stops"] = torch.tensor(np.array(stops), dtype=torch.float32, device=self.dev)[None]  # (1, k, 2, 3)
            layer["axes"] = torch.tensor(np.array(axes), dtype=torch.float32, device=self.dev)[None]  # (1, k, 4)
            trainable += ["stops", "axes"]
        for key in trainable:
            layer[key].requires_grad_(True)
        groups = [{"params": [layer["points"]], "lr": cfg.lr_points}]
        colour_params = [layer["colors"]] + ([layer["stops"]] if "stops" in layer else [])
        groups.append({"params": colour_params, "lr": cfg.lr_colors})
        if "axes" in layer:
            groups.append({"params": [layer["axes"]], "lr": cfg.lr_points})
        if stroke:
            groups.append({"params": [layer["widths"]], "lr": cfg.lr_widths})
        layer["opt"] = torch.optim.Adam(groups)
        layer["base_lr"] = [g["lr"] for g in groups]
        layer["age"] = 0
        self.layers.append(layer)
        self.new_range = (self.num_paths, self.num_paths + len(regions))
        self.num_paths += len(regions)

    def topology(self) -> Topology:
        closed = [c for L in self.layers for c in L["closed"]]
        nseg = (self.cfg.num_segments,) * len(closed)
        styles = None
        if self.cfg.paint == "gradient":
            from studio.render import PathStyle

            styles = tuple(PathStyle(fill_paint=i) for i in range(len(closed)))
        return Topology(nseg, tuple(closed), tuple(closed), styles=styles)

    def scene(self) -> Scene:
        cat = lambda key: torch.cat([L[key] for L in self.layers], 1)  # noqa: E731
        colors = cat("colors")
        closed = torch.tensor([c for L in self.layers for c in L["closed"]], device=self.dev)
        fills = colors * closed[None, :, None]
        # shapes only: constant transparent strokes, which the renderer skips
        strokes = colors * (~closed)[None, :, None] if self.cfg.mode == "stroke" else torch.zeros_like(colors)
        grads: tuple = ()
        if self.cfg.paint == "gradient":
            stops, axes = cat("stops"), cat("axes")  # (1, P, 2, 3), (1, P, 4)
            eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=self.dev)
            offs = torch.tensor([[0.0, 1.0]], device=self.dev)
            grads = tuple(Gradient("linear", offs, torch.cat([stops[:, p], torch.ones(1, 2, 1, device=self.dev)], -1),
                                   axes[:, p], eye) for p in range(stops.shape[1]))
        return Scene(self.topology(), cat("points"), cat("widths"), strokes, fills, width=self.w, height=self.h,
                     background=None, gradients=grads)

    def draw(self, scene: Scene) -> torch.Tensor:
        """(1, 3, H, W) over white (LIVE's fixed white background)."""
        return to_image(render(scene))

    def draw_new_alpha(self) -> np.ndarray:
        """(H, W) coverage of the newest layer's paths alone, drawn opaque (for the UDF weight)."""
        s = self.scene().detach()
        a, b = self.new_range
        t = s.topology.select_paths(a, b)
        closed = torch.tensor(t.closed, device=self.dev)[None, :, None]
        ones = torch.ones(1, t.num_paths, 4, device=self.dev)
        sub = Scene(Topology(t.num_segments, t.closed, t.filled), s.select_paths(a, b).points,
                    s.widths[:, a:b].clamp(min=1.0) * ~closed[..., 0], ones * ~closed, ones * closed, width=self.w,
                    height=self.h, background=None)
        return render(sub)[0, ..., 3].cpu().numpy()

    def closed_points(self, scene: Scene) -> torch.Tensor:
        """(P_closed, 3n, 2) points of the closed paths."""
        n = self.cfg.num_segments
        parts, off = [], 0
        for L in self.layers:
            for c in L["closed"]:
                k = 3 * n if c else 3 * n + 1
                if c:
                    parts.append(scene.points[0, off:off + k])
                off += k
        return torch.stack(parts) if parts else scene.points.new_zeros(1, 3 * n, 2)

    # -- optimising
    def zero_grad(self) -> None:
        for L in self.layers:
            L["opt"].zero_grad(set_to_none=True)

    def step(self, cfg: VectorizeConfig) -> None:
        for L in self.layers:
            # LIVE's linear_decay_lrlambda_f: within every num_steps the rate falls linearly by `lr_decay`
            k, r = divmod(L["age"], cfg.num_steps)
            f = cfg.lr_decay ** k * (1 - r / cfg.num_steps) + cfg.lr_decay ** (k + 1) * (r / cfg.num_steps)
            for g, lr in zip(L["opt"].param_groups, L["base_lr"]):
                g["lr"] = lr * f
            L["opt"].step()
            L["age"] += 1
            with torch.no_grad():
                L["points"][..., 0].clamp_(-1.0, self.w + 1.0)  # keeps every path's box (and its cost) on canvas
                L["points"][..., 1].clamp_(-1.0, self.h + 1.0)
                L["colors"].clamp_(0.0, 1.0)
                L["widths"].clamp_(0.0, cfg.max_stroke_width)
                for i, c in enumerate(L["closed"]):
                    if not c:
                        L["widths"][0, i].clamp_(min=0.5)
                if "stops" in L:
                    L["stops"].clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------- initialisation
def _clusters(tgt: np.ndarray, k: int, rng: np.random.Generator, blur: float = 0.0) -> np.ndarray:
    """(H, W) int label of each pixel's nearest of `k` k-means colours (fitted on up to 20 000 pixels) of the
    picture blurred by `blur` pixels (a photo's texture would cut its regions into specks)."""
    if blur > 0:
        from scipy import ndimage

        tgt = ndimage.gaussian_filter(tgt, (blur, blur, 0), mode="nearest")
    flat = tgt.reshape(-1, 3)
    sample = flat[rng.choice(len(flat), size=min(len(flat), 20_000), replace=False)]
    centres = kmeans(sample, k, rng)
    lab = np.empty(len(flat), np.int64)
    for i in range(0, len(flat), 65536):
        lab[i:i + 65536] = ((flat[i:i + 65536, None] - centres[None]) ** 2).sum(-1).argmin(1)
    return lab.reshape(tgt.shape[:2])


def _regions(err: np.ndarray, labels: np.ndarray, tgt: np.ndarray, n: int, min_error: float) -> list[dict]:
    """The `n` connected regions of one colour cluster with the largest summed error (pixels with error above
    `min_error`), described for initialisation; padded with the largest-error pixels when there are fewer."""
    from scipy import ndimage

    wrong = err > min_error
    cands = []  # (error mass, cluster, component id, labelled map)
    for c in np.unique(labels[wrong]):
        comp, num = ndimage.label(wrong & (labels == c))
        if num == 0:
            continue
        mass = ndimage.sum_labels(err, comp, index=np.arange(1, num + 1))
        for j in np.argsort(-mass)[:n]:
            cands.append((float(mass[j]), comp, j + 1))
    cands.sort(key=lambda c: -c[0])
    out = [_describe(comp == j, tgt) for _, comp, j in cands[:n]]
    flat = np.argsort(-err, axis=None)
    i = 0
    while len(out) < n:  # fewer regions than paths: small discs on the worst pixels (LIVE's naive init)
        y, x = divmod(int(flat[i % flat.size]), err.shape[1])
        mask = np.zeros_like(wrong)
        mask[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = True
        out.append(_describe(mask, tgt))
        i += 7
    return out


def _describe(mask: np.ndarray, tgt: np.ndarray) -> dict:
    """A region's centre (its pixel nearest the centroid), outline radii along 12 rays, main axis, extent along and
    across it, mean colour, and gradient stops fitted along the axis."""
    ys, xs = np.nonzero(mask)
    px = np.stack([xs + 0.5, ys + 0.5], -1)  # pixel centres
    mean = px.mean(0)
    centre = px[((px - mean) ** 2).sum(-1).argmin()]
    cols = tgt[ys, xs]  # (N, 3)
    colour = cols.mean(0)
    cov = np.cov((px - mean).T) if len(px) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov + 1e-6 * np.eye(2))
    u = evecs[:, 1]
    t = (px - mean) @ u
    along = float(t.max() - t.min()) + 1.0
    across = 4.0 * math.sqrt(max(float(evals[0]), 0.0)) + 1.0
    # gradient stops: colour ≈ a + b·s along the axis, s in [0, 1] from the region's one end to the other
    s = (t - t.min()) / max(along - 1.0, 1e-6)
    design = np.stack([np.ones_like(s), s], -1)
    coef, *_ = np.linalg.lstsq(design, cols, rcond=None)
    stops = np.clip(np.stack([coef[0], coef[0] + coef[1]]), 0, 1)
    p1, p2 = mean + u * t.min(), mean + u * t.max()
    if np.allclose(p1, p2):
        p2 = p1 + np.array([1.0, 0.0])
    rel = px - centre
    return {"mask": mask, "centre": centre, "mean": mean, "axis": np.concatenate([p1, p2]), "u": u, "along": along,
            "across": across, "colour": colour, "stops": stops, "rel": rel}


def _outline_points(r: dict, nseg: int) -> np.ndarray:
    """(3·nseg, 2) control points on the region's outline: along each of 3·nseg rays from its centre, the farthest
    region pixel (+ half a pixel's diagonal), so the shape covers the region and any holes in it (later layers
    paint those on top, LIVE's layering)."""
    m = 3 * nseg
    rel = r["rel"]
    ang = np.arctan2(rel[:, 1], rel[:, 0])
    dist = np.hypot(rel[:, 0], rel[:, 1])
    bins = np.floor((ang + math.pi) / (2 * math.pi) * m + 0.5).astype(int) % m
    radii = np.zeros(m)
    np.maximum.at(radii, bins, dist)
    radii = np.where(radii > 0, radii + 0.71, 0.0)
    if (radii == 0).any():  # rays that met no pixel: the neighbours' mean, at least a pixel
        filled = radii.copy()
        for i in np.nonzero(radii == 0)[0]:
            filled[i] = max(1.0, (radii[(i - 1) % m] + radii[(i + 1) % m]) / 2)
        radii = filled
    angles = np.arange(m) / m * 2 * math.pi - math.pi
    return bezier_circle(r["centre"], radii, angles)


def _stroke_points(r: dict, nseg: int, w: int, h: int) -> np.ndarray:
    """(3·nseg + 1, 2) points of a straight stroke through the region's centre along its main axis."""
    half = max(r["along"] / 2 - r["across"] / 4, 0.5)
    s = np.linspace(-half, half, 3 * nseg + 1)
    p = r["mean"][None] + s[:, None] * r["u"][None]
    return np.clip(p, 0, [w, h])


def _rect_points(w: int, h: int, nseg: int) -> np.ndarray:
    """(3·nseg, 2) control points of a closed path that is the canvas rectangle (straight cubic sides)."""
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    ring = []
    per = np.array_split(np.arange(nseg), 4) if nseg >= 4 else None
    if per is None:  # fewer segments than sides: a ring through the corners still covers the canvas
        pts = np.array([[-w, -h], [2 * w, -h], [2 * w, 2 * h], [-w, 2 * h]], dtype=np.float64)
        t = np.linspace(0, 4, 3 * nseg, endpoint=False)
        return np.array([pts[int(x) % 4] + (pts[(int(x) + 1) % 4] - pts[int(x) % 4]) * (x - int(x)) for x in t])
    for side, segs in enumerate(per):
        a, b = corners[side], corners[(side + 1) % 4]
        k = len(segs)
        for j in range(3 * k):
            ring.append(a + (b - a) * j / (3 * k))
    return np.array(ring)


def _udf(alpha: np.ndarray, truncate: float) -> torch.Tensor:
    """LIVE's `get_sdf(normalize='to1')`: (1 − d/truncate)⁺ with d the distance to the outline of `alpha` > 0.5."""
    from scipy import ndimage

    inside = alpha > 0.5
    if inside.all() or not inside.any():
        return torch.zeros(alpha.shape)
    d = np.where(inside, ndimage.distance_transform_edt(inside), ndimage.distance_transform_edt(~inside))
    d = np.clip(d - 0.5, 0, truncate)
    wgt = d.max() - d
    return torch.from_numpy((wgt / max(wgt.max(), 1e-12)).astype(np.float32))


def _prune(scene: Scene) -> Scene:
    """The scene without paths that draw nothing: transparent, zero-width open strokes, or closed paths whose
    outline encloses (almost) no area (shoelace over the control polygon)."""
    t = scene.topology
    keep = []
    offs, per = t.point_offsets, t.points_per_path
    for p in range(t.num_paths):
        q = scene.points[0, offs[p]:offs[p] + per[p]].detach().double()
        if t.closed[p]:
            colour_a = float(scene.fill_colors[0, p, 3])
            area = 0.5 * abs(float((q[:, 0] * q.roll(-1, 0)[:, 1] - q.roll(-1, 0)[:, 0] * q[:, 1]).sum()))
            ok = colour_a >= MIN_ALPHA and area >= MIN_AREA
        else:
            ok = float(scene.stroke_colors[0, p, 3]) >= MIN_ALPHA and float(scene.widths[0, p]) > 0.05
        keep.append(ok)
    if all(keep) or not any(keep):
        return scene
    parts = []
    start = None
    for p, k in enumerate(keep + [False]):
        if k and start is None:
            start = p
        if not k and start is not None:
            parts.append((start, p))
            start = None
    pieces = [scene.select_paths(a, b, background=None) for a, b in parts]
    topo = pieces[0].topology
    for s in pieces[1:]:
        topo = topo.concat(s.topology)
    kept = [p for p, k in enumerate(keep) if k]
    grads = scene.gradients
    if topo.styles is not None and grads:  # renumber the kept paths' gradient paints
        from dataclasses import replace

        grads = tuple(grads[t.style(p).fill_paint] for p in kept)
        topo = replace(topo, styles=tuple(replace(s, fill_paint=i) for i, s in enumerate(topo.styles)))
    cat = lambda get: torch.cat([get(s) for s in pieces], 1)  # noqa: E731
    return Scene(topo, cat(lambda s: s.points), cat(lambda s: s.widths), cat(lambda s: s.stroke_colors),
                 cat(lambda s: s.fill_colors), width=scene.width, height=scene.height, background=None,
                 gradients=grads)


def _check_work(cfg: VectorizeConfig, size: tuple[int, int]) -> None:
    """Refuse, before any work, a run whose largest drawing could be too much to render: `num_paths` paths each
    as large as the canvas (points are kept on the canvas, so no path's box is larger), strokes at their widest."""
    w, h = size
    n = cfg.num_segments
    stroke = cfg.mode == "stroke"
    closed = (True,) + (not stroke,) * (cfg.num_paths - 1)
    ring = torch.tensor(_rect_points(w, h, n), dtype=torch.float32)
    diag = torch.linspace(0, 1, 3 * n + 1)[:, None] * torch.tensor([[float(w), float(h)]])
    pts = torch.cat([ring if c else diag for c in closed])[None]
    widths = torch.tensor([[0.0 if c else cfg.max_stroke_width for c in closed]])
    topo = Topology((n,) * cfg.num_paths, closed, closed)
    scene = Scene(topo, pts, widths, torch.zeros(1, cfg.num_paths, 4), torch.zeros(1, cfg.num_paths, 4), width=w,
                  height=h)
    work = render_work(scene)
    if work > MAX_RENDER_WORK:
        raise ValueError(f"`num_paths` {cfg.num_paths} on a {w}×{h} canvas could take too much work to draw: about "
                         f"{work / 1e6:.1f} M tile evaluations per step, more than the {MAX_RENDER_WORK / 1e6:.0f} M "
                         f"allowed (fewer paths or a smaller `canvas_size`)")


register(Task(
    name="vectorize", title="Picture → SVG (Vectorize)", config=VectorizeConfig, pipeline=VectorizePipeline,
    method="iterate", models=("clip",),
    inputs=(Input("image", "image", help="the picture to vectorize"),),
    load=lambda clip=None, device=None: VectorizePipeline.from_pretrained(clip, device=device)))
