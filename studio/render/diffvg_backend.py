"""Render a `Scene` through pydiffvg (Li et al. 2020, https://github.com/BachiLi/diffvg) when it is installed.

Untested here: pydiffvg has no PyPI wheel and is not installed on the development machine. The mapping follows
pydiffvg's own conventions: `Path.stroke_width` is *half* the SVG width (its `save_svg` writes `2 * stroke_width`),
closed paths share their first point as in our layout, and its output is taken to be straight (not premultiplied)
RGBA over a transparent canvas, as CLIPDraw's notebook composites it (`rgb * a + white * (1 - a)`); we premultiply it
and composite over `scene.background` to match `render`'s contract.
"""

from __future__ import annotations

import torch

from .scene import Scene


def _import_pydiffvg():
    try:
        import pydiffvg  # type: ignore[import-not-found]
    except ImportError as err:
        raise ValueError(
            "`backend='diffvg'` needs pydiffvg, which is not installed (it has no PyPI wheel; build it from "
            "https://github.com/BachiLi/diffvg). The default `backend='torch'` needs nothing extra."
        ) from err
    return pydiffvg


def render_diffvg(scene: Scene, samples: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA over `scene.background`, one pydiffvg call per scene in the batch."""
    topo = scene.topology
    if topo.subpaths is not None or not topo.round_solid or scene.gradients:
        raise ValueError("`backend='diffvg'` draws one subpath per path with round caps and joins, solid, in flat "
                         "colours; this scene has compound paths, other caps/joins/dashes or gradients: use "
                         "backend='torch'")
    pydiffvg = _import_pydiffvg()
    pydiffvg.set_use_gpu(scene.device.type == "cuda")
    if scene.device.type == "cuda":
        pydiffvg.set_device(scene.device)
    offsets, counts = topo.point_offsets, topo.points_per_path
    filled = topo.filled if scene.fill_colors is not None else None
    out = []
    for i in range(scene.batch_size):
        shapes, groups = [], []
        for p in range(scene.num_paths):
            pts = scene.points[i, offsets[p]:offsets[p] + counts[p]]
            shapes.append(pydiffvg.Path(num_control_points=torch.full((topo.num_segments[p],), 2, dtype=torch.int32),
                                        points=pts, stroke_width=scene.widths[i, p] / 2, is_closed=topo.closed[p]))
            fill = scene.fill_colors[i, p] if filled is not None and filled[p] else None
            groups.append(pydiffvg.ShapeGroup(shape_ids=torch.tensor([p]), fill_color=fill,
                                              stroke_color=scene.stroke_colors[i, p],
                                              use_even_odd_rule=scene.path_fill_rule(p) == "evenodd"))
        args = pydiffvg.RenderFunction.serialize_scene(scene.width, scene.height, shapes, groups)
        img = pydiffvg.RenderFunction.apply(scene.width, scene.height, samples, samples, seed, None, *args)
        out.append(img.to(scene.points.dtype))
    img = torch.stack(out)  # (B, H, W, 4) straight RGBA over transparent
    alpha = img[..., 3:]
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=img.device, dtype=img.dtype)
    rgb = img[..., :3] * alpha + (1 - alpha) * bg[:3] * bg[3]
    return torch.cat([rgb, alpha + (1 - alpha) * bg[3]], -1)
