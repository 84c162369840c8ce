"""Differentiable vector renderer in pure PyTorch: scene model, rasteriser, SVG in and out.

The role diffvg (Li et al. 2020, "Differentiable Vector Graphics Rasterization for Editing and Learning") plays in
CLIPDraw and CLIPasso, without a compiled extension: runs on CPU and GPU, batched over scenes that share a topology.

Scene model (`Scene`, `Topology`, `Path`, `Subpath`, `PathStyle`, `Gradient`)
    A batch of B scenes with one topology: per path, its subpaths (each a run of cubic Bézier segments, open or
    closed), filled or not, and its `PathStyle` (cap, join, miter limit, dash pattern and offset, fill rule, and
    which paints are gradients). A path with several subpaths is one shape: one fill (holes by its fill rule), one
    stroke. Tensors (optimise them directly):
        points        (B, num_points, 2)  pixel coordinates, x right, y down; an open subpath of n segments owns
                                          3n+1 consecutive points, a closed one 3n (its last segment ends on its
                                          first point)
        widths        (B, P)              stroke widths in pixels
        stroke_colors (B, P, 4)           straight (not premultiplied) RGBA in [0, 1]
        fill_colors   (B, P, 4) or None   used for paths with `topology.filled[p]`; fill is painted below stroke
        gradients     tuple of Gradient   offsets (B, S), colors (B, S, 4), geometry, transform (B, 2, 3)
        dash_offsets  (B, P) or None      the dash offsets as a tensor (`scene.with_dash_offsets()`), else the
                                          styles' constants
    plus `width`, `height` (ints), `background` (RGB(A) tuple, or None for transparent), `fill_rule` (the default
    for paths whose style has none). Build one with `Scene(topology, points, ...)` or `Scene.from_paths([Path(...)])`
    (lines and quadratics are elevated to cubics). `scene.select(i)`, `Scene.stack([...])`, `scene.repeat(B)`,
    `scene.detach()`, `scene.clone()`, `scene.to(device)`, `scene.requires_grad_()`, `scene.resized(w, h)` (onto
    another canvas, clips and gradients included), `scene.with_dash_offsets()`. Without styles every path is
    round-capped, round-joined and solid: the CLIPDraw/CLIPasso look, drawn by the distance-only fast path.

Rendering
    render(scene, backend="torch" | "reference" | "diffvg", tolerance=0.1, tile=4, chunk=2) -> (B, H, W, 4)
        PREMULTIPLIED RGBA composited over `scene.background` (with the default opaque white background the alpha
        channel is 1 and RGB is the final image). Anti-aliased (one-pixel box filter of the distance to the curve;
        butt/square caps and dashes by a 1-D box filter along the path, miter/bevel joins by the joins' edges;
        fills by winding number with the same filter at the boundary), painter's order, differentiable w.r.t.
        points, widths, colours, gradients and dash offsets (when a tensor). `topology.groups` ranges are drawn
        on layers of their own, composited with their opacity and clipped to their rectangle. "torch" is the
        tiled fast path (cost grows with covered area), "reference" the brute-force oracle, "diffvg" uses pydiffvg
        when installed (ValueError otherwise; round solid strokes and flat colours only).
        Deterministic on CPU; on CUDA the backward pass accumulates gradients with atomic adds (index backward),
        so gradients can differ in the last bits between runs unless `torch.use_deterministic_algorithms(True)`.
    render_one(scene, index=0, **kw) -> (H, W, 4)
    to_image(rgba, background=None) -> (B, 3, H, W) RGB, what `CLIPScorer.encode_image` takes (composites any
        remaining transparency over white)
    to_uint8(rgba) -> numpy uint8 RGB for saving

SVG (the writer is `svg_write`, the reader `svg_read`)
    to_svg(scene, index=0) -> str       what we draw: subpaths, caps, joins, dashes, fill rules, gradients
    from_svg(text) -> Scene             SVG 2's static part as the spec draws it (CSS, use, gradients, caps, holes)
                                        or a ValueError naming what it cannot draw; defusedxml, bounded parsing

Example: optimise strokes toward a target image
    >>> import torch
    >>> from studio.render import Path, Scene, render, to_image
    >>> target = to_image(render(Scene.from_paths([Path([(10, 50), (40, 10), (60, 90), (90, 50)], stroke_width=6,
    ...                                                  stroke=(0.9, 0.1, 0.1, 1))], 100, 100)))
    >>> scene = Scene.from_paths([Path([(20, 20), (40, 40), (60, 60), (80, 80)], stroke_width=3)], 100, 100)
    >>> scene.requires_grad_()  # doctest: +ELLIPSIS
    Scene(...)
    >>> opt = torch.optim.Adam([{"params": [scene.points], "lr": 1.0},
    ...                         {"params": [scene.widths, scene.stroke_colors], "lr": 0.05}])
    >>> for step in range(100):
    ...     opt.zero_grad()
    ...     loss = (to_image(render(scene)) - target).pow(2).mean()
    ...     loss.backward()
    ...     opt.step()
    ...     with torch.no_grad():
    ...         _ = scene.stroke_colors.clamp_(0, 1)  # keep colours valid, as CLIPDraw does after each step
    >>> loss.item() < 1e-3
    True
"""

from .geometry import DEFAULT_TOLERANCE, flatten
from .rasterize import BACKENDS, render, render_one, to_image, to_uint8
from .scene import MAX_CANVAS, Gradient, Path, PathStyle, Scene, Subpath, Topology
from .svg_read import from_svg
from .svg_write import to_svg

__all__ = [
    "BACKENDS",
    "DEFAULT_TOLERANCE",
    "Gradient",
    "MAX_CANVAS",
    "Path",
    "PathStyle",
    "Scene",
    "Subpath",
    "Topology",
    "flatten",
    "from_svg",
    "render",
    "render_one",
    "to_image",
    "to_svg",
    "to_uint8",
]
