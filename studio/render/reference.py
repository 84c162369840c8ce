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
    crossing_direction,
    distance,
    fill_coverage,
    flatten,
    segment_crossings,
    segment_distance2,
    segment_hits,
    stroke_coverage,
    winding_contribution,
)
from .paint import layer_colors
from .scene import Scene
from .stroke import stroke_geometry, style_tensors, styled_coverage


def _pixel_centres(width: int, height: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                            torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return xs.reshape(-1, 1), ys.reshape(-1, 1)  # (HW, 1) each


def _stroke_alpha(px, py, a, b, half_width):
    # a, b: (E, 2) edges of one path -> (HW,) coverage
    d2 = segment_distance2(px, py, a[:, 0], a[:, 1], b[:, 0], b[:, 1]).amin(dim=1)
    return stroke_coverage(distance(d2), half_width)


def _styled_stroke_alpha(px, py, poly, sg, st, first, count, path, half_width, offset=None):
    """Nearest edge of the path for every pixel by brute force, then the shared styled coverage."""
    a, b = poly.a[first:first + count], poly.b[first:first + count]
    with torch.no_grad():
        e = segment_distance2(px, py, a[:, 0], a[:, 1], b[:, 0], b[:, 1]).argmin(dim=1) + first  # (HW,)
    gp = torch.tensor([path], device=px.device)
    return styled_coverage(px.reshape(1, -1), py.reshape(1, -1), e[None], poly, sg, gp, half_width.reshape(1, 1),
                           st, None if offset is None else offset.reshape(1, 1))[0]


def _fill_alpha(px, py, a, b, fill_rule: str):
    """Coverage of the fill of edges a-b (E, 2): winding number at each centre, then the inside fraction of the
    one-pixel segment towards the nearest edge (`geometry.fill_coverage`), every edge tested against every pixel."""
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    wind = winding_contribution(px, py, ax, ay, bx, by).sum(dim=1)  # (HW,)
    with torch.no_grad():
        near = segment_distance2(px, py, ax, ay, bx, by).argmin(dim=1)  # (HW,)
    nx, ny = crossing_direction(px[:, 0], py[:, 0], ax[near], ay[near], bx[near], by[near])
    with torch.no_grad():
        pix, e = torch.nonzero(segment_hits(px, py, nx.detach()[:, None], ny.detach()[:, None], ax, ay, bx, by),
                               as_tuple=True)
    t, step, before = segment_crossings(px[pix, 0], py[pix, 0], nx[pix], ny[pix], ax[e], ay[e], bx[e], by[e])
    evenodd = torch.full_like(wind, fill_rule == "evenodd", dtype=torch.bool)
    return fill_coverage(wind, evenodd, pix, t, step, before)


def _over(img: torch.Tensor, coverage: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Porter-Duff "over": a layer of straight RGBA `colour` ((4,) or per pixel (HW, 4)) with per-pixel `coverage`
    over premultiplied `img`."""
    alpha = (coverage * colour[..., 3])[:, None]  # (HW, 1)
    return img * (1 - alpha) + torch.cat([colour[..., :3], torch.ones_like(colour[..., :1])], -1) * alpha


def _colour(scene: Scene, paint, i: int, flat: torch.Tensor, px, py) -> torch.Tensor:
    if paint is None:
        return flat
    g = torch.tensor([paint], device=flat.device)
    return layer_colors(scene, g, torch.tensor([i], device=flat.device), flat[None], px.reshape(1, -1),
                        py.reshape(1, -1))[0]


def render_reference(scene: Scene, tolerance: float = DEFAULT_TOLERANCE) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA, composited over `scene.background`. Same contract as `render`."""
    poly = flatten(scene, tolerance)
    dev, dtype = scene.points.device, scene.points.dtype
    px, py = _pixel_centres(scene.width, scene.height, dev, dtype)
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=dev, dtype=dtype)
    bg = torch.cat([bg[:3] * bg[3], bg[3:]])
    topo = scene.topology
    styled = not topo.round_solid
    sg = stroke_geometry(poly, topo) if styled else None
    st = style_tensors(topo, dev, dtype) if styled else None
    pstarts, pcounts = poly.path_start.tolist(), poly.path_count.tolist()
    inst_path = poly.inst_path.tolist()
    filled = topo.filled if scene.fill_colors is not None else None
    out = []
    for i in range(scene.batch_size):
        img = bg.expand(scene.width * scene.height, 4)
        for p in range(scene.num_paths):
            inst = i * scene.num_paths + p
            s, n = pstarts[inst], pcounts[inst]
            style = topo.style(p)
            half = scene.widths[i, p] / 2
            if filled is not None and filled[p]:  # fill below stroke, as SVG paints them
                subs = [c for c, owner in enumerate(inst_path) if owner == inst]
                fa = torch.cat([poly.a[s:s + n], poly.close_a[subs]])
                fb = torch.cat([poly.b[s:s + n], poly.close_b[subs]])
                colour = _colour(scene, style.fill_paint, i, scene.fill_colors[i, p], px, py)
                img = checkpoint(_fill_step, img, px, py, fa, fb, colour, scene.path_fill_rule(p),
                                 use_reentrant=False)
            colour = _colour(scene, style.stroke_paint, i, scene.stroke_colors[i, p], px, py)
            if styled:
                cov = _styled_stroke_alpha(px, py, poly, sg, st, s, n, p, half,
                                           None if scene.dash_offsets is None else scene.dash_offsets[i, p])
                img = _over(img, cov, colour)
            else:  # recomputed in backward: keeps memory at one image per path
                img = checkpoint(_stroke_step, img, px, py, poly.a[s:s + n], poly.b[s:s + n], half, colour,
                                 use_reentrant=False)
        out.append(img.reshape(scene.height, scene.width, 4))
    return torch.stack(out)


def _fill_step(img, px, py, fa, fb, colour, fill_rule):
    return _over(img, _fill_alpha(px, py, fa, fb, fill_rule), colour)


def _stroke_step(img, px, py, a, b, half_width, colour):
    return _over(img, _stroke_alpha(px, py, a, b, half_width), colour)
