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
    """Every SUBPATH of every scene flattened to a polyline, as flat lists over subpath *instances* (scene b,
    subpath c) numbered `b * C + c`. Edge `e` runs from `a[e]` to `b[e]` and belongs to instance `edge_inst[e]`; an
    instance's edges are contiguous (`inst_start`, `inst_count`), and the subpaths of one path are consecutive, so
    a path instance's edges are contiguous too (`path_start`, `path_count`, indexed `b * P + p`). `close_a`/`close_b`
    is each subpath instance's closing edge (last vertex to first), used only for fills (zero length for closed
    subpaths). `seg_first`/`seg_last` mark edges that start/end a cubic segment (where joins are drawn). Each scene
    is flattened on its own, so a scene renders the same alone or in a batch."""

    a: torch.Tensor  # (E, 2)
    b: torch.Tensor  # (E, 2)
    edge_inst: torch.Tensor  # (E,) long
    inst_start: torch.Tensor  # (B * C,) long
    inst_count: torch.Tensor  # (B * C,) long
    close_a: torch.Tensor  # (B * C, 2)
    close_b: torch.Tensor  # (B * C, 2)
    seg_first: torch.Tensor  # (E,) bool
    seg_last: torch.Tensor  # (E,) bool
    path_start: torch.Tensor  # (B * P,) long
    path_count: torch.Tensor  # (B * P,) long
    inst_path: torch.Tensor  # (B * C,) long: the path instance b * P + p of each subpath instance


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
    seg_ctrl, seg_sub = tt["seg_ctrl"], tt["seg_sub"]
    pts, dev = scene.points, scene.points.device
    bsz, num_sub, nseg = scene.batch_size, scene.topology.num_subpaths, seg_sub.numel()
    ctrl = pts[:, seg_ctrl].reshape(bsz * nseg, 4, 2)  # segment instances, scene-major
    seg_inst = (torch.arange(bsz, device=dev)[:, None] * num_sub + seg_sub).reshape(-1)  # (B*S,)
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
    local = torch.arange(edge_seg.numel(), device=dev) - edge_start[edge_seg]
    first = vert_start[edge_seg] + local
    ninst = bsz * num_sub
    inst_count = torch.zeros(ninst, dtype=torch.long, device=dev).index_add_(0, seg_inst, k)
    inst_start = torch.cumsum(inst_count, 0) - inst_count
    # closing edge: last vertex of the instance's last segment -> first vertex of its first segment
    seg_count = tt["num_segments"].repeat(bsz)
    last_seg = torch.cumsum(seg_count, 0) - 1
    first_seg = last_seg - seg_count + 1
    close_a = verts[vert_start[last_seg] + k[last_seg]]
    close_b = verts[vert_start[first_seg]]
    num_paths = scene.num_paths
    inst_path = (torch.arange(bsz, device=dev)[:, None] * num_paths + tt["sub_path"]).reshape(-1)  # (B*C,)
    path_count = torch.zeros(bsz * num_paths, dtype=torch.long, device=dev).index_add_(0, inst_path, inst_count)
    path_start = torch.cumsum(path_count, 0) - path_count
    return Polyline(verts[first], verts[first + 1], seg_inst[edge_seg], inst_start, inst_count, close_a, close_b,
                    local == 0, local == k[edge_seg] - 1, path_start, path_count, inst_path)


def fill_edges(poly: Polyline, path_inst: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Edge ids (into `cat([poly.a, poly.close_a])`) of the filled path instances `path_inst` (NF,): each of their
    subpaths' edges followed by its closing edge, one contiguous run per path instance. Returns ids (EF,), owner
    (EF,) (index into `path_inst`), run start (NF,) and run count (NF,)."""
    dev = poly.a.device
    with torch.no_grad():
        nf = path_inst.numel()
        slot = torch.full((poly.path_count.numel(),), -1, dtype=torch.long, device=dev)
        slot[path_inst] = torch.arange(nf, device=dev)
        sub_owner = slot[poly.inst_path]  # (B*C,) fill index of each subpath instance, -1 if not filled
        subs = torch.nonzero(sub_owner >= 0).flatten()  # in order: a path's subpaths stay consecutive
        count = poly.inst_count[subs] + 1
        sstart = torch.cumsum(count, 0) - count
        sub_of = torch.repeat_interleave(torch.arange(subs.numel(), device=dev), count)
        local = torch.arange(sub_of.numel(), device=dev) - sstart[sub_of]
        inst = subs[sub_of]
        ids = torch.where(local < count[sub_of] - 1, poly.inst_start[inst] + local, poly.a.shape[0] + inst)
        owner = sub_owner[inst]
        run_count = torch.zeros(nf, dtype=torch.long, device=dev).index_add_(0, sub_owner[subs], count)
        run_start = torch.cumsum(run_count, 0) - run_count
    return ids, owner, run_start, run_count


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
