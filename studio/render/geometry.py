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


def crossing_direction(px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor,
                       by: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit direction (nx, ny) from each pixel centre p to its closest point on edge a-b (with gradient), or the
    edge's normal where p lies on it (within 1e-3 px): the line along which a fill's coverage is box-filtered."""
    ex, ey = bx - ax, by - ay
    length2 = ex * ex + ey * ey
    t = (((px - ax) * ex + (py - ay) * ey) / (length2 + _EPS)).clamp(0, 1)
    dx, dy = ax + t * ex - px, ay + t * ey - py
    d = torch.sqrt(dx * dx + dy * dy + _EPS)
    far = d > 1e-3
    length = torch.sqrt(length2 + _EPS)
    edge = length > 1e-6
    # clamp_min keeps the unselected branch finite (a where() routes 0 * inf = nan into the gradient otherwise)
    nx = torch.where(far, dx / d.clamp_min(1e-3), torch.where(edge, -ey / length.clamp_min(1e-6), torch.ones_like(d)))
    ny = torch.where(far, dy / d.clamp_min(1e-3), torch.where(edge, ex / length.clamp_min(1e-6), torch.zeros_like(d)))
    return nx, ny


def segment_hits(px, py, nx, ny, ax, ay, bx, by) -> torch.Tensor:
    """Whether the one-pixel segment p - n/2 .. p + n/2 (n unit) crosses edge a-b (all arguments broadcast).

    Half-open on the segment's line (an edge counts when one end is strictly on the +side and the other on or below
    it), so a vertex two edges share on the line is crossed once, and an edge lying along the line not at all."""
    sa = nx * (ay - py) - ny * (ax - px)  # cross(n, a - p)
    sb = nx * (by - py) - ny * (bx - px)
    hit = ((sa <= 0) & (sb > 0)) | ((sb <= 0) & (sa > 0))
    ux, uy = bx - ax, by - ay
    den = nx * uy - ny * ux  # cross(n, u) = sb - sa: nonzero where hit
    t = ((ax - px) * uy - (ay - py) * ux) / torch.where(hit, den, torch.ones_like(den))
    return hit & (t > -0.5) & (t < 0.5)


def segment_crossings(px, py, nx, ny, ax, ay, bx, by, left: torch.Tensor | None = None):
    """For crossings found by `segment_hits` (all arguments (K,), differentiable): the position t in (-0.5, 0.5)
    along n (with gradient), the change of winding number when crossing in the +n direction (int), and whether the
    edge lies between the pixel centre and the segment's start p - n/2 (bool).

    The winding number at a pixel centre counts an edge through p as if p sat just right of it (x + 0) and just
    below a horizontal one (y + 0), as `winding_contribution` and the scanline do; `left` (K,) optionally gives
    whether each edge's crossing of p's row lies strictly right of p (the backend's own rounding), used where the
    edge spans p's row, so the start's winding agrees with the centre's to the last bit."""
    ux, uy = bx - ax, by - ay
    den = nx * uy - ny * ux
    t = ((ax - px) * uy - (ay - py) * ux) / den
    with torch.no_grad():
        sa = nx * (ay - py) - ny * (ax - px)
        step = torch.where(sa <= 0, -1, 1).to(torch.int32)  # -1 crossing an edge that runs to the +side of n
        cp = ux * (py - ay) - uy * (px - ax)  # cross(u, p - a): > 0 where p is "left" of an upward edge
        sgn_uy = torch.sign(uy)
        side_p = torch.where(cp != 0, torch.sign(cp), torch.where(uy != 0, -sgn_uy, torch.sign(ux)))
        if left is not None:
            spans = ((ay <= py) & (py < by)) | ((by <= py) & (py < ay))
            side_p = torch.where(spans, torch.where(left, sgn_uy, -sgn_uy), side_p)
        sx, sy = px - nx / 2, py - ny / 2
        side_s = torch.sign(ux * (sy - ay) - uy * (sx - ax))
        before = side_p != side_s
    return t, step, before


def fill_coverage(wind: torch.Tensor, evenodd: torch.Tensor, pix: torch.Tensor, t: torch.Tensor, step: torch.Tensor,
                  before: torch.Tensor) -> torch.Tensor:
    """Box-filtered fill coverage of N pixels along their one-pixel segments: the fraction of p - n/2 .. p + n/2
    that is inside the fill, from the winding number `wind` (N,) at each centre and the crossings of the segments
    (`pix` (K,) pixel, `t`, `step`, `before` from `segment_crossings`); `evenodd` (N,) bool per pixel.

    Inside the segment the winding number changes only at crossings, so the inside length is
    0.5 (I_0 + I_m) + sum_k t_k (I_{k-1} - I_k) over the crossings sorted by t, I the inside-ness of each interval.
    An edge with fill on both sides (two halves that abut, overlapping same-direction subpaths) changes nothing,
    so it draws no seam; a lone boundary at distance d gives 0.5 +- d, the familiar clamp(0.5 + signed distance)."""
    def inside(w, odd):
        return torch.where(odd, (w % 2) != 0, w != 0).to(t.dtype)

    cov = inside(wind, evenodd)  # pixels no edge crosses: their centre's side
    if pix.numel() == 0:
        return cov
    with torch.no_grad():
        order = torch.sort(t.detach(), stable=True)[1]
        order = order[torch.sort(pix[order], stable=True)[1]]  # by pixel, then t
        spix, sstep = pix[order], step[order].to(wind.dtype)
        first = torch.ones_like(spix, dtype=torch.bool)
        first[1:] = spix[1:] != spix[:-1]
        run = torch.cumsum(first, 0) - 1  # (K,) the run (crossed pixel) of each crossing
        upix = spix[first]  # (U,) crossed pixels
        w0 = wind[upix] - torch.zeros_like(upix, dtype=wind.dtype).index_add_(0, run, sstep * before[order])
        cum = torch.cumsum(sstep, 0)
        base = (cum - sstep)[first]  # the running sum before each run
        w_after = w0[run] + cum - base[run]
        w_end = w0 + torch.zeros_like(w0).index_add_(0, run, sstep)
        odd = evenodd[upix]
        jump = inside(w_after - sstep, odd[run]) - inside(w_after, odd[run])  # I_{k-1} - I_k
        ends = 0.5 * (inside(w0, odd) + inside(w_end, odd))
    crossed = ends.index_add(0, run, t[order] * jump)
    return cov.index_put((upix,), crossed)


def inside_from_winding(winding: torch.Tensor, fill_rule: str) -> torch.Tensor:
    return winding != 0 if fill_rule == "nonzero" else (winding % 2) != 0
