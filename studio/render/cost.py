"""How much work a render will be, counted before it runs, so a scene that would take gigabytes is refused first.

The tiled rasteriser (`tiled.py`) evaluates one 4 × 4 tile of pixels for every (edge chunk, tile) pair whose padded
box overlaps the tile, and keeps a layer per (tile, path) for the backward pass; its memory and time grow with that
pair count, not with the number of paths. `render_work` counts the pairs from the flattened edges' boxes (padded by
half the stroke width and the filter, clipped to the canvas), plus the tiles of every filled path's box and one
canvas of tiles per group (`Topology.groups`: each is a layer of its own), without building the layers. Measured
on CPU (forward + backward, `benchmarks/render.py` scenes and long wide strokes): about 0.5 to 3 KB of peak memory
per pair, so `MAX_RENDER_WORK` (4 M pairs) is a few GB at most.
"""

from __future__ import annotations

import torch

from .geometry import DEFAULT_TOLERANCE, flatten
from .scene import Scene

MAX_RENDER_WORK = 4_000_000  # (edge, tile) pairs per render; the default CLIPDraw scene is about 1 % of it


def _tiles(lo: torch.Tensor, hi: torch.Tensor, width: int, height: int, tile: int) -> torch.Tensor:
    nx = (torch.floor(hi[..., 0].clamp(max=width - 1) / tile) - torch.floor(lo[..., 0].clamp(min=0) / tile) + 1)
    ny = (torch.floor(hi[..., 1].clamp(max=height - 1) / tile) - torch.floor(lo[..., 1].clamp(min=0) / tile) + 1)
    return nx.clamp(min=0) * ny.clamp(min=0)


@torch.no_grad()
def render_work(scene: Scene, widths: torch.Tensor | None = None, tolerance: float = DEFAULT_TOLERANCE,
                tile: int = 4) -> int:
    """(edge, tile) pairs a render of `scene` will evaluate, over the whole batch. `widths` (B, P) replaces the
    scene's stroke widths (e.g. the widest a run allows)."""
    poly = flatten(scene.detach(), tolerance)
    w = (scene.widths if widths is None else widths).detach().clamp(min=0).reshape(-1)
    styles = scene.topology.styles
    if styles is not None:  # miter joins reach out to miter_limit × half the width, square caps to √2 × it
        reach = torch.tensor([max(s.miter_limit if s.join == "miter" else 1.0, 1.5 if s.cap == "square" else 1.0)
                              for s in styles]).repeat(scene.batch_size)
        w = w * reach
    pad = (w.cpu()[poly.inst_path[poly.edge_inst].cpu()] / 2 + 0.51)[:, None]
    a, b = poly.a.detach().cpu().reshape(-1, 2), poly.b.detach().cpu().reshape(-1, 2)
    lo, hi = torch.minimum(a, b) - pad, torch.maximum(a, b) + pad
    work = float(_tiles(lo, hi, scene.width, scene.height, tile).sum())
    filled = scene.topology.filled
    if scene.fill_colors is not None and filled is not None and any(filled):
        pts = scene.points.detach().cpu()
        for p, off, n in zip(range(scene.num_paths), scene.topology.point_offsets, scene.topology.points_per_path):
            if filled[p]:
                seg = pts[:, off:off + n]
                work += float(_tiles(seg.amin(1), seg.amax(1), scene.width, scene.height, tile).sum())
    # every group (opacity layer, clip) is drawn and composited over the whole canvas of every scene
    ntiles = -(-scene.width // tile) * -(-scene.height // tile)
    work += len(scene.topology.groups or ()) * ntiles * scene.batch_size
    return int(work)


def check_render_work(scene: Scene, name: str, widths: torch.Tensor | None = None,
                      limit: int = MAX_RENDER_WORK) -> int:
    """`render_work`, or `ValueError` naming the input when it exceeds `limit`."""
    work = render_work(scene, widths)
    if work > limit:
        raise ValueError(f"`{name}` would take too much work to draw: about {work / 1e6:.1f} M tile evaluations per "
                         f"step, more than the {limit / 1e6:.0f} M allowed (fewer or thinner strokes, shorter "
                         f"paths, or a smaller canvas)")
    return work
