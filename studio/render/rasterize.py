"""`render`: one entry point over the rasteriser backends, plus image helpers for CLIP."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch

from .geometry import DEFAULT_TOLERANCE
from .reference import render_reference
from .scene import Scene
from .tiled import DEFAULT_CHUNK, DEFAULT_TILE, render_tiled

BACKENDS = ("torch", "reference", "diffvg")


def render(scene: Scene, backend: str = "torch", *, tolerance: float = DEFAULT_TOLERANCE, tile: int = DEFAULT_TILE,
           chunk: int = DEFAULT_CHUNK, samples: int = 2, seed: int = 0) -> torch.Tensor:
    """Rasterise a batch of scenes: (B, H, W, 4) **premultiplied** RGBA, composited over `scene.background`.

    With an opaque background (the default, white) alpha is 1 and the RGB channels are the finished image.
    Differentiable w.r.t. `scene.points`, `widths`, `stroke_colors` and `fill_colors`.

    backend: "torch" (tiled fast path, default), "reference" (brute force, slow; the test oracle) or "diffvg"
        (needs `pydiffvg`). `tolerance` is the flattening error in pixels; `tile` and `chunk` tune the fast path;
        `samples` and `seed` are diffvg's per-axis supersampling and sampling seed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(scene, Scene):
        raise ValueError(f"`scene` must be a Scene, got {type(scene).__name__}")
    if not isinstance(tolerance, (int, float)) or not 1e-3 <= tolerance <= 10:
        raise ValueError(f"`tolerance` must be in [0.001, 10] pixels, got {tolerance!r}")
    for name, t in (("points", scene.points), ("widths", scene.widths)) + (
            (("dash_offsets", scene.dash_offsets),) if scene.dash_offsets is not None else ()):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`scene.{name}` must be finite, got NaN or infinite values")
    def draw(s: Scene) -> torch.Tensor:
        if backend == "reference":
            return render_reference(s, tolerance)
        if backend == "diffvg":
            from .diffvg_backend import render_diffvg

            return render_diffvg(s, samples=samples, seed=seed)
        return render_tiled(s, tolerance, tile, chunk)

    if scene.topology.groups is None:
        return draw(scene)
    layer = _draw_range(scene, 0, scene.num_paths, scene.topology.groups, draw)
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=scene.device, dtype=scene.points.dtype)
    bg = torch.cat([bg[:3] * bg[3], bg[3:]])
    return layer + bg * (1 - layer[..., 3:])


def _draw_range(scene: Scene, start: int, stop: int, groups, draw) -> torch.Tensor:
    """Paths [start, stop) over transparent, premultiplied: runs outside groups drawn as they are, each top-level
    group drawn on its own layer (recursively) and composited "over" with its opacity (Porter & Duff 1984). A
    group's layer is drawn on the smallest canvas crop its paths can reach (and its clip allows), then padded back,
    so a group costs what its area costs, not a whole canvas."""
    top, end = [], start
    for i, g in enumerate(groups):  # sorted by (first, -end): the first group at each position is the outermost
        if g[0] >= end:
            top.append(i)
            end = g[1]
    pieces, cursor = [], start
    for i in top:
        a, b = groups[i][:2]
        if cursor < a:
            pieces.append((cursor, a, None))
        pieces.append((a, b, i))
        cursor = b
    if cursor < stop:
        pieces.append((cursor, stop, None))
    img = None
    for a, b, i in pieces:
        if i is None:
            layer = draw(scene.select_paths(a, b))
        else:  # the groups inside this one (it excluded), on a layer of their own
            g = groups[i]
            clip = g[3] if len(g) > 3 else None
            inner = [(h[0] - a, h[1] - a, *h[2:]) for j, h in enumerate(groups) if j != i and a <= h[0] and h[1] <= b]
            part = scene.select_paths(a, b)
            box = _reach(part, clip)
            if box is None:  # nothing of it can reach the canvas
                layer = scene.points.new_zeros(scene.batch_size, scene.height, scene.width, 4) + part.points.sum() * 0
            else:
                x0, y0, x1, y1 = box
                sub = _crop(part, x0, y0, x1 - x0, y1 - y0)
                inner = [(h[0], h[1], h[2], None if len(h) < 4 or h[3] is None else
                          (h[3][0] - x0, h[3][1] - y0, h[3][2] - x0, h[3][3] - y0)) for h in inner]
                layer = _draw_range(sub, 0, b - a, tuple(inner), draw) * g[2]
                if clip is not None:
                    rect = (clip[0] - x0, clip[1] - y0, clip[2] - x0, clip[3] - y0)
                    layer = layer * clip_mask(rect, sub.width, sub.height, layer)
                layer = torch.nn.functional.pad(layer, (0, 0, x0, scene.width - x1, y0, scene.height - y1))
        img = layer if img is None else layer + img * (1 - layer[..., 3:])
    return img


def _reach(scene: Scene, clip) -> tuple[int, int, int, int] | None:
    """The integer pixel box (x0, y0, x1, y1) of the canvas the scene's paths can touch: their control points (a
    Bézier lies in their hull) padded by the widest stroke's reach (miter tips, square caps) and the filter, within
    the canvas and the clip; None when empty."""
    with torch.no_grad():
        pts = scene.points.detach()
        lo, hi = pts.amin((0, 1)).tolist(), pts.amax((0, 1)).tolist()
        factor = torch.tensor([max(s.miter_limit if s.join == "miter" else 1.0, 1.5 if s.cap == "square" else 1.0)
                               for s in scene.topology.all_styles], dtype=pts.dtype, device=pts.device)
        pad = float((scene.widths.detach().clamp(min=0) / 2 * factor).amax()) + 2.0
    x0, y0 = max(0, math.floor(lo[0] - pad)), max(0, math.floor(lo[1] - pad))
    x1, y1 = min(scene.width, math.ceil(hi[0] + pad)), min(scene.height, math.ceil(hi[1] + pad))
    if clip is not None:
        x0, y0 = max(x0, math.floor(clip[0])), max(y0, math.floor(clip[1]))
        x1, y1 = min(x1, math.ceil(clip[2])), min(y1, math.ceil(clip[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _crop(scene: Scene, x0: int, y0: int, width: int, height: int) -> Scene:
    """The scene on the canvas window [x0, x0 + width) x [y0, y0 + height): points and gradient transforms
    shifted by whole pixels (so every pixel is drawn as on the full canvas)."""
    if (x0, y0, width, height) == (0, 0, scene.width, scene.height):
        return scene
    off = torch.tensor([float(x0), float(y0)], device=scene.device, dtype=scene.points.dtype)
    grads = tuple(replace(g, transform=g.transform - torch.nn.functional.pad(off.to(g.transform.dtype)[:, None],
                                                                             (2, 0)))
                  for g in scene.gradients)
    return replace(scene, points=scene.points - off, width=width, height=height, gradients=grads)


def clip_mask(rect, width: int, height: int, like: torch.Tensor) -> torch.Tensor:
    """(H, W, 1) box-filtered coverage of each pixel by the axis-aligned rectangle (x0, y0, x1, y1): the area of
    pixel [i, i+1] x [j, j+1] inside it (exact for the one-pixel box filter the renderer uses everywhere)."""
    x0, y0, x1, y1 = rect
    xs = torch.arange(width, device=like.device, dtype=like.dtype)
    ys = torch.arange(height, device=like.device, dtype=like.dtype)
    cx = (torch.clamp(xs + 1, max=x1) - torch.clamp(xs, min=x0)).clamp(0, 1)
    cy = (torch.clamp(ys + 1, max=y1) - torch.clamp(ys, min=y0)).clamp(0, 1)
    return (cy[:, None] * cx[None, :])[..., None]


def render_one(scene: Scene, index: int = 0, **kwargs) -> torch.Tensor:
    """Scene `index` of the batch as an (H, W, 4) premultiplied RGBA image; keyword arguments go to `render`."""
    return render(scene.select(index), **kwargs)[0]


def to_image(rgba: torch.Tensor, background: Sequence[float] | None = None) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA -> (B, 3, H, W) RGB, the layout `CLIPScorer.encode_image` takes.

    `background` (RGB in [0, 1]) is composited under whatever is still transparent (default white; a no-op when the
    scene already had an opaque background). Values stay in [0, 1] whenever the colours were; not clamped, so
    gradients flow everywhere.
    """
    if rgba.dim() != 4 or rgba.shape[-1] != 4:
        raise ValueError(f"`rgba` must have shape (B, H, W, 4), got {tuple(rgba.shape)}")
    bg = torch.tensor(tuple(background) if background is not None else (1.0, 1.0, 1.0), device=rgba.device,
                      dtype=rgba.dtype)
    if bg.shape != (3,):
        raise ValueError(f"`background` must be 3 numbers (RGB), got {background!r}")
    rgb = rgba[..., :3] + (1 - rgba[..., 3:]) * bg
    return rgb.permute(0, 3, 1, 2)


def to_uint8(rgba: torch.Tensor, background: Sequence[float] | None = None) -> "numpy.ndarray":  # noqa: F821
    """(B, H, W, 4) or (H, W, 4) premultiplied RGBA -> uint8 RGB array(s) (B, H, W, 3) / (H, W, 3) for saving."""
    single = rgba.dim() == 3
    img = to_image(rgba[None] if single else rgba, background).permute(0, 2, 3, 1)
    out = (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return out[0] if single else out
