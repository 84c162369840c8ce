"""`render`: one entry point over the rasteriser backends, plus image helpers for CLIP."""

from __future__ import annotations

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
    group drawn on its own layer (recursively) and composited "over" with its opacity (Porter & Duff 1984)."""
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
            inner = tuple(g for j, g in enumerate(groups) if j != i and a <= g[0] and g[1] <= b)
            layer = _draw_range(scene, a, b, inner, draw) * groups[i][2]
            if len(groups[i]) > 3 and groups[i][3] is not None:
                layer = layer * clip_mask(groups[i][3], scene.width, scene.height, layer)
        img = layer if img is None else layer + img * (1 - layer[..., 3:])
    return img


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
