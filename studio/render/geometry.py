"""Shared geometry for both rasterisers: curve flattening, distance to segments, winding numbers, coverage.

Both the tiled fast path and the brute-force reference call these, so they differ only in *which* (pixel, edge)
pairs they evaluate and how they composite; their agreement tests the culling and compositing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scene import Scene, topology_tensors

DEFAULT_TOLERANCE = 0.1  # px: max distance between a cubic and its polyline (Wang's bound), well under AA width
MAX_PIECES = 64  # per cubic segment; caps the work for huge curves far outside the canvas
_EPS = 1e-12  # keeps sqrt differentiable at distance 0


@dataclass
class Polyline:
    """Every path of every scene flattened to a polyline, as flat lists over path *instances* (scene b, path p)
    numbered `b * P + p`. Edge `e` runs from `a[e]` to `b[e]` and belongs to instance `edge_inst[e]`; an instance's
    edges are contiguous (`inst_start`, `inst_count`). `close_a`/`close_b` is each instance's closing edge (last
    vertex to first), used only for fills (zero length for closed paths). Each scene is flattened on its own, so a
    scene renders the same alone or in a batch."""

    a: torch.Tensor  # (E, 2)
    b: torch.Tensor  # (E, 2)
    edge_inst: torch.Tensor  # (E,) long
    inst_start: torch.Tensor  # (B * P,) long
    inst_count: torch.Tensor  # (B * P,) long
    close_a: torch.Tensor  # (B * P, 2)
    close_b: torch.Tensor  # (B * P, 2)


def _bernstein(t: torch.Tensor) -> torch.Tensor:
    """(N,) parameters -> (N, 4) cubic Bernstein weights."""
    s = 1 - t
    return torch.stack([s * s * s, 3 * s * s * t, 3 * s * t * t, t * t * t], dim=-1)


def pieces_per_segment(ctrl: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Number of polyline pieces per cubic so the chord error stays below `tolerance` px.

    Wang's formula (Wang 1984; see Sederberg, "Computer Aided Geometric Design", sec. 10.6): n >= sqrt(d(d-1)/8 *
    max|P_i - 2P_{i+1} + P_{i+2}| / tol) with d = 3. `ctrl` is (N, 4, 2); computed without gradient.
    """
    with torch.no_grad():
        dd = ctrl[:, :2] - 2 * ctrl[:, 1:3] + ctrl[:, 2:]  # (N, 2, 2) second differences
        m = dd.norm(dim=-1).amax(dim=1)  # (N,)
        n = torch.sqrt(0.75 * m / tolerance).ceil().clamp(1, MAX_PIECES)
        return n.nan_to_num(MAX_PIECES).long()


def flatten(scene: Scene, tolerance: float = DEFAULT_TOLERANCE) -> Polyline:
    """Flatten every cubic of every scene into straight edges (differentiable w.r.t. `scene.points`)."""
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0 (pixels), got {tolerance}")
    tt = topology_tensors(scene.topology, scene.device)
    seg_ctrl, seg_path = tt["seg_ctrl"], tt["seg_path"]
    pts, dev = scene.points, scene.points.device
    bsz, num_paths, nseg = scene.batch_size, scene.num_paths, seg_path.numel()
    ctrl = pts[:, seg_ctrl].reshape(bsz * nseg, 4, 2)  # segment instances, scene-major
    seg_inst = (torch.arange(bsz, device=dev)[:, None] * num_paths + seg_path).reshape(-1)  # (B*S,)
    k = pieces_per_segment(ctrl, tolerance)  # (B*S,)
    nsi = k.numel()
    # vertices: for segment s, t = j / k_s for j = 0..k_s (segment ends duplicated; simpler than sharing)
    vert_seg = torch.repeat_interleave(torch.arange(nsi, device=dev), k + 1)  # (V,)
    vert_start = torch.cumsum(k + 1, 0) - (k + 1)
    j = torch.arange(vert_seg.numel(), device=dev) - vert_start[vert_seg]
    t = j.to(pts.dtype) / k[vert_seg].to(pts.dtype)
    verts = torch.einsum("vk,vkd->vd", _bernstein(t), ctrl[vert_seg])  # (V, 2)
    # edges: vertex i -> i + 1 within each segment
    edge_seg = torch.repeat_interleave(torch.arange(nsi, device=dev), k)  # (E,)
    edge_start = torch.cumsum(k, 0) - k
    first = vert_start[edge_seg] + torch.arange(edge_seg.numel(), device=dev) - edge_start[edge_seg]
    ninst = bsz * num_paths
    inst_count = torch.zeros(ninst, dtype=torch.long, device=dev).index_add_(0, seg_inst, k)
    inst_start = torch.cumsum(inst_count, 0) - inst_count
    # closing edge: last vertex of the instance's last segment -> first vertex of its first segment
    seg_count = tt["num_segments"].repeat(bsz)
    last_seg = torch.cumsum(seg_count, 0) - 1
    first_seg = last_seg - seg_count + 1
    close_a = verts[vert_start[last_seg] + k[last_seg]]
    close_b = verts[vert_start[first_seg]]
    return Polyline(verts[first], verts[first + 1], seg_inst[edge_seg], inst_start, inst_count, close_a, close_b)


def segment_distance2(px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor,
                      by: torch.Tensor) -> torch.Tensor:
    """Squared distance from points (px, py) to segments a-b; all arguments broadcast."""
    ex, ey = bx - ax, by - ay
    wx, wy = px - ax, py - ay
    t = ((wx * ex + wy * ey) / (ex * ex + ey * ey + _EPS)).clamp(0, 1)
    dx, dy = wx - t * ex, wy - t * ey
    return dx * dx + dy * dy


def winding_contribution(px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor,
                         by: torch.Tensor) -> torch.Tensor:
    """Signed crossing (+1, -1 or 0) of a ray from (px, py) towards +x with each edge a-b (non-zero winding rule,
    crossing-number convention of Sunday 2001: upward edges include their start, downward edges their end)."""
    cross = (bx - ax) * (py - ay) - (px - ax) * (by - ay)
    up = (ay <= py) & (by > py) & (cross > 0)
    down = (by <= py) & (ay > py) & (cross < 0)
    return up.to(torch.int32) - down.to(torch.int32)


def distance(d2: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(d2 + _EPS)


def stroke_coverage(d: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """Fraction of a one-pixel box filter centred at distance `d` from the curve that the band |x| <= half_width
    covers: exact for straight strokes, so the summed coverage of a stroke equals its width times its length."""
    return (torch.minimum(d + 0.5, half_width) - torch.maximum(d - 0.5, -half_width)).clamp(0, 1)


def fill_coverage(d: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Box-filtered coverage of a fill from the signed distance to its boundary (inside positive)."""
    return (0.5 + torch.where(inside, d, -d)).clamp(0, 1)


def inside_from_winding(winding: torch.Tensor, fill_rule: str) -> torch.Tensor:
    return winding != 0 if fill_rule == "nonzero" else (winding % 2) != 0
