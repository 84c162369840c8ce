"""Brute-force reference rasteriser: every layer against every pixel and every edge of its path.

Kept deliberately plain (Python loops over scenes and paths, sequential "over" compositing in painter's order,
Porter & Duff 1984) so the fast tiled path can be tested and benchmarked against it. Each path's coverage and
compositing step is recomputed in the backward pass (`torch.utils.checkpoint`), so memory stays at one image per
path.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .geometry import (
    DEFAULT_TOLERANCE,
    distance,
    fill_coverage,
    flatten,
    inside_from_winding,
    segment_distance2,
    stroke_coverage,
    winding_contribution,
)
from .scene import Scene


def _pixel_centres(width: int, height: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                            torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return xs.reshape(-1, 1), ys.reshape(-1, 1)  # (HW, 1) each


def _stroke_alpha(px, py, a, b, half_width):
    # a, b: (E, 2) edges of one path -> (HW,) coverage
    d2 = segment_distance2(px, py, a[:, 0], a[:, 1], b[:, 0], b[:, 1]).amin(dim=1)
    return stroke_coverage(distance(d2), half_width)


def _fill_alpha(px, py, a, b, fill_rule: str):
    d2 = segment_distance2(px, py, a[:, 0], a[:, 1], b[:, 0], b[:, 1]).amin(dim=1)
    wind = winding_contribution(px, py, a[:, 0], a[:, 1], b[:, 0], b[:, 1]).sum(dim=1)
    return fill_coverage(distance(d2), inside_from_winding(wind, fill_rule))


def _over(img: torch.Tensor, coverage: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Porter-Duff "over": a layer of straight RGBA `colour` with per-pixel `coverage` over premultiplied `img`."""
    alpha = (coverage * colour[3])[:, None]  # (HW, 1)
    return img * (1 - alpha) + torch.cat([colour[:3], colour.new_ones(1)]) * alpha


def _path_step(img, px, py, a, b, half_width, stroke, fa, fb, fill, fill_rule):
    if fill is not None:  # fill below stroke, as SVG paints them
        img = _over(img, _fill_alpha(px, py, fa, fb, fill_rule), fill)
    return _over(img, _stroke_alpha(px, py, a, b, half_width), stroke)


def render_reference(scene: Scene, tolerance: float = DEFAULT_TOLERANCE) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA, composited over `scene.background`. Same contract as `render`."""
    poly = flatten(scene, tolerance)
    dev, dtype = scene.points.device, scene.points.dtype
    px, py = _pixel_centres(scene.width, scene.height, dev, dtype)
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=dev, dtype=dtype)
    bg = torch.cat([bg[:3] * bg[3], bg[3:]])
    starts, counts = poly.inst_start.tolist(), poly.inst_count.tolist()
    filled = scene.topology.filled if scene.fill_colors is not None else None
    out = []
    for i in range(scene.batch_size):
        img = bg.expand(scene.width * scene.height, 4)
        for p in range(scene.num_paths):
            inst = i * scene.num_paths + p
            s, n = starts[inst], counts[inst]
            a, b = poly.a[s:s + n], poly.b[s:s + n]  # (n, 2)
            fa = fb = fill = None
            if filled is not None and filled[p]:
                fa = torch.cat([a, poly.close_a[inst:inst + 1]])
                fb = torch.cat([b, poly.close_b[inst:inst + 1]])
                fill = scene.fill_colors[i, p]
            # recomputed in backward: keeps memory at one image per path
            img = checkpoint(_path_step, img, px, py, a, b, scene.widths[i, p] / 2, scene.stroke_colors[i, p], fa, fb,
                             fill, scene.fill_rule, use_reentrant=False)
        out.append(img.reshape(scene.height, scene.width, 4))
    return torch.stack(out)
