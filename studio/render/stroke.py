"""Styled strokes shared by both rasterisers: caps, joins and dashes from the nearest edge of each pixel.

The round, solid stroke is the set of points within half the width of the path; its box-filtered coverage is
`geometry.stroke_coverage` of the distance to the nearest edge (the fast path). Every other style is evaluated
from the same nearest edge, in the frame of that edge (Porter & Duff style "one primitive per pixel"):

- the pixel's arclength position `sigma` along its subpath (the nearest point's, continued past the open ends)
  and its distance `n` to the path (perpendicular past the ends);
- caps and dashes: the on-set along the subpath (dash intervals, clipped to the subpath, butt = as is, square =
  widened by half the width) is box-filtered in 1-D, `A = |on ∩ [sigma - 1/2, sigma + 1/2]|`, and multiplies the
  across-the-stroke coverage; round caps use the distance to the nearest dash end, sqrt(n^2 + gap^2);
- joins (at the vertices between cubic segments, and the closing vertex of a closed subpath): pixels whose
  nearest point is such a vertex lie in its outer wedge; there a miter is the intersection of the two edges'
  outer half-planes (within `miter_limit`, else a bevel), a bevel cuts the round join at hw cos(theta/2) along
  the bisector. Vertices inside a flattened curve keep the round join (the offset of a smooth curve).

The dash measure of a periodic pattern is closed-form (floor of the period count plus the partial period), so it
is differentiable w.r.t. the points (through the arclength), the widths (square caps) and nothing else
and the dash offset when the scene carries it as a tensor (`Scene.dash_offsets`; otherwise the offset, like the
pattern, is a constant of the `PathStyle`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .geometry import Polyline, stroke_coverage
from .scene import Topology, topology_tensors

BUTT, ROUND, SQUARE = 0, 1, 2  # cap codes
MITER, BEVEL = 0, 2  # join codes (ROUND = 1)
_EPS = 1e-12


@functools.lru_cache(maxsize=64)
def style_tensors(topology: Topology, device: torch.device, dtype: torch.dtype) -> dict:
    """Per-path style constants as tensors: cap, join (P,) long; miter (P,); dashed (P,) bool; dash starts, lengths
    and validity (P, K); period and offset (P,). K is the longest pattern (at least 1)."""
    styles = topology.all_styles
    caps = {"butt": BUTT, "round": ROUND, "square": SQUARE}
    joins = {"miter": MITER, "round": ROUND, "bevel": BEVEL}
    k = max([len(s.dash) // 2 for s in styles] + [1])
    starts, lens, valid, period = [], [], [], []
    for s in styles:
        acc, row_s, row_l = 0.0, [], []
        for i in range(0, len(s.dash), 2):
            row_s.append(acc)
            row_l.append(s.dash[i])
            acc += s.dash[i] + s.dash[i + 1]
        valid.append([True] * len(row_s) + [False] * (k - len(row_s)))
        starts.append(row_s + [0.0] * (k - len(row_s)))
        lens.append(row_l + [0.0] * (k - len(row_l)))
        period.append(acc if s.dash else 1.0)
    kw = {"device": device, "dtype": dtype}
    return {  # plus two Python flags, so the hot path never waits on the device to branch
        "any_dash": any(bool(s.dash) for s in styles),
        "any_round_cap": any(s.cap == "round" for s in styles),
        "any_flat_cap": any(s.cap != "round" for s in styles),
        "cap": torch.tensor([caps[s.cap] for s in styles], dtype=torch.long, device=device),
        "join": torch.tensor([joins[s.join] for s in styles], dtype=torch.long, device=device),
        "miter": torch.tensor([s.miter_limit for s in styles], **kw),
        "dashed": torch.tensor([bool(s.dash) for s in styles], dtype=torch.bool, device=device),
        "dash_start": torch.tensor(starts, **kw),
        "dash_len": torch.tensor(lens, **kw),
        "dash_valid": torch.tensor(valid, dtype=torch.bool, device=device),
        "period": torch.tensor(period, **kw),
        "offset": torch.tensor([s.dash_offset for s in styles], **kw),
    }


@dataclass
class StrokeGeometry:
    """Per-edge quantities styled strokes need: arclength at the edge's start within its subpath (`cum`), the
    subpath's length (`sub_len`, per subpath instance), closed/first/last flags and the unit directions of the
    previous and next edges of the subpath (wrapping on closed subpaths)."""

    cum: torch.Tensor
    sub_len: torch.Tensor
    closed: torch.Tensor
    sub_first: torch.Tensor
    sub_last: torch.Tensor
    u_prev: torch.Tensor
    u_next: torch.Tensor


def stroke_geometry(poly: Polyline, topology: Topology) -> StrokeGeometry:
    dev = poly.a.device
    seg = poly.b - poly.a
    length = torch.sqrt((seg * seg).sum(-1) + _EPS)  # (E,)
    u = seg / length[:, None]
    with torch.no_grad():
        idx = torch.arange(seg.shape[0], device=dev)
        first_e = poly.inst_start[poly.edge_inst]
        last_e = first_e + poly.inst_count[poly.edge_inst] - 1
        sub_first, sub_last = idx == first_e, idx == last_e
        num_sub = topology.num_subpaths
        closed_inst = topology_tensors(topology, dev)["closed"].repeat(poly.inst_count.numel() // num_sub)
        closed = closed_inst[poly.edge_inst]
        prev = torch.where(sub_first, last_e, idx - 1)
        nxt = torch.where(sub_last, first_e, idx + 1)
    cs = torch.cumsum(length.double(), 0) - length.double()  # exclusive, in float64 so long scenes keep precision
    cum = (cs - cs[first_e]).to(length.dtype)
    sub_len = torch.zeros(poly.inst_count.numel(), dtype=length.dtype, device=dev).index_add(0, poly.edge_inst,
                                                                                            length)
    return StrokeGeometry(cum, sub_len, closed, sub_first, sub_last, u[prev], u[nxt])


def edge_pad(poly: Polyline, widths: torch.Tensor, topology: Topology, sg: StrokeGeometry) -> torch.Tensor:
    """(E,) how far (px) each edge's stroke can reach: half the width plus the half-pixel filter, times sqrt(2)
    for square caps, and at the segment ends of mitred paths times the miter's length ratio 1 / cos(theta / 2)
    for the turn there (when within the miter limit; a bevel stays within the half width)."""
    st = style_tensors(topology, poly.a.device, poly.a.dtype)
    with torch.no_grad():
        pinst = poly.inst_path[poly.edge_inst]
        path = pinst % topology.num_paths
        half = widths.detach().clamp(min=0).reshape(-1)[pinst] / 2
        f = torch.where(st["cap"] == SQUARE, math.sqrt(2.0), 1.0).to(half.dtype)[path]
        seg = poly.b.detach() - poly.a.detach()
        u = seg / torch.sqrt((seg * seg).sum(-1, keepdim=True) + _EPS)
        mitred = (st["join"] == MITER)[path]
        for at, other in ((poly.seg_first, sg.u_prev.detach()), (poly.seg_last, sg.u_next.detach())):
            cos_half = torch.sqrt(((1 + (u * other).sum(-1)) / 2).clamp(0, 1) + _EPS)
            ratio = 1 / cos_half
            ratio = torch.where(ratio <= st["miter"][path], ratio, torch.ones_like(ratio))
            f = torch.where(at & mitred, torch.maximum(f, ratio), f)
        return (half + 0.5) * f + 0.01


def _dash_measure(u: torch.Tensor, c: torch.Tensor, d: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Length of the periodic on-set (intervals [c_k, c_k + d_k] + m * period) within (-inf, u], up to a
    constant: sum_k floor((u - c_k) / P) d_k + min((u - c_k) mod P, d_k). u (G, N); c, d (G, K); period (G, 1)."""
    rel = u[..., None] - c[:, None, :]
    per = period[..., None]
    m = torch.floor(rel / per)
    return (m * d[:, None, :] + torch.minimum(rel - m * per, d[:, None, :])).sum(-1)


def _dash_gap(u: torch.Tensor, c: torch.Tensor, d: torch.Tensor, valid: torch.Tensor,
              period: torch.Tensor) -> torch.Tensor:
    """Distance (along the path) from u to the nearest dash of the periodic pattern (0 inside one)."""
    per = period[..., None]
    v = torch.remainder(u[..., None] - c[:, None, :], per)
    dd = d[:, None, :]
    g = torch.where(v <= dd, torch.zeros_like(v), torch.minimum(v - dd, per - v))
    g = torch.where(valid[:, None, :], g, torch.full_like(g, float("inf")))
    return g.amin(-1)


def _dash_bounds(sub_len: torch.Tensor, offset: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
                 valid: torch.Tensor, period: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the dashes of an open subpath of length `sub_len` (G, N) really start and end: the first on-point at
    or after 0 and the last at or before the length (the pattern clipped to the subpath, before caps widen it)."""
    inf = torch.full_like(c, float("inf"))
    v0 = torch.remainder(offset, period)  # (G, 1)
    on0 = (valid & (v0 >= c) & (v0 <= c + d)).any(-1, keepdim=True)
    nxt = torch.where(valid & (c >= v0), c, inf).amin(-1, keepdim=True)
    nxt = torch.where(torch.isinf(nxt), c[:, :1] + period, nxt)
    first = torch.where(on0, torch.zeros_like(v0), nxt - v0)  # (G, 1)
    vl = torch.remainder(sub_len + offset, period)[..., None]  # (G, N, 1)
    cc, ee, vv = c[:, None, :], (c + d)[:, None, :], valid[:, None, :]
    on_l = (vv & (vl >= cc) & (vl <= ee)).any(-1)
    prev = torch.where(vv & (ee <= vl), ee, -inf[:, None, :]).amax(-1)
    last_end = torch.where(valid, c + d, -inf).amax(-1, keepdim=True)  # (G, 1)
    prev = torch.where(torch.isinf(prev), last_end - period, prev)
    last = torch.where(on_l, sub_len, sub_len - (vl[..., 0] - prev))
    return first.expand_as(sub_len), last


def styled_coverage(px: torch.Tensor, py: torch.Tensor, e: torch.Tensor, poly: Polyline, sg: StrokeGeometry,
                    gp: torch.Tensor, half: torch.Tensor, st: dict[str, torch.Tensor],
                    offset: torch.Tensor | None = None) -> torch.Tensor:
    """Coverage (G, N) of stroke layers: pixels (px, py) (G, N), their nearest edges `e` (G, N), the layer's path
    `gp` (G,) and half width `half` (G, 1); `offset` (G, 1) the layers' dash offsets (default: the styles'
    constants). Differentiable w.r.t. the edges, the widths and `offset`."""
    a, b = poly.a[e], poly.b[e]  # (G, N, 2)
    ab = b - a
    length = torch.sqrt((ab * ab).sum(-1) + _EPS)
    ux, uy = ab[..., 0] / length, ab[..., 1] / length
    wx, wy = px - a[..., 0], py - a[..., 1]
    t_raw = wx * ux + wy * uy
    perp = (wx * uy - wy * ux).abs()
    tc = torch.minimum(t_raw.clamp(min=0), length)
    dx, dy = wx - ux * tc, wy - uy * tc
    d = torch.sqrt(dx * dx + dy * dy + _EPS)
    closed = sg.closed[e]
    start_cap = ~closed & sg.sub_first[e] & (t_raw < 0)
    end_cap = ~closed & sg.sub_last[e] & (t_raw > length)
    capreg = start_cap | end_cap
    n = torch.where(capreg, perp, d)
    sigma = sg.cum[e] + torch.where(capreg, t_raw, tc)
    body = stroke_coverage(n, half)

    join = st["join"][gp][:, None].expand_as(e)
    sc = poly.seg_first[e] & (t_raw < 0) & ~start_cap
    ec = poly.seg_last[e] & (t_raw > length) & ~end_cap
    corner = (sc | ec) & (join != ROUND)
    rows = torch.nonzero(corner, as_tuple=True)
    if rows[0].numel():
        s_r = sc[rows][:, None]
        u_e = torch.stack([ux[rows], uy[rows]], -1)
        u1 = torch.where(s_r, sg.u_prev[e[rows]], u_e)
        u2 = torch.where(s_r, u_e, sg.u_next[e[rows]])
        v = torch.where(s_r, a[rows], b[rows])
        q = torch.stack([px.expand_as(e)[rows], py.expand_as(e)[rows]], -1) - v
        hw = half.expand_as(e)[rows]
        m = u1 - u2
        mn = torch.sqrt((m * m).sum(-1) + _EPS)
        mhat = m / mn[:, None]
        cos_half = torch.sqrt(((1 + (u1 * u2).sum(-1)) / 2).clamp(0, 1) + _EPS)
        round_join = stroke_coverage(torch.sqrt((q * q).sum(-1) + _EPS), hw)
        bevel = torch.minimum(round_join, (0.5 + hw * cos_half - (q * mhat).sum(-1)).clamp(0, 1))
        n1 = torch.stack([-u1[:, 1], u1[:, 0]], -1)
        n2 = torch.stack([-u2[:, 1], u2[:, 0]], -1)
        n1 = n1 * torch.where((n1 * mhat).sum(-1) >= 0, 1.0, -1.0)[:, None]
        n2 = n2 * torch.where((n2 * mhat).sum(-1) >= 0, 1.0, -1.0)[:, None]
        x = torch.maximum((q * n1).sum(-1), (q * n2).sum(-1))
        # the kite between the two outer edges, inside the circle through its tip (so an edge that is not the
        # pixel's nearest, as the tiled path may pick past the culling distance, never draws a far miter)
        miter = torch.minimum(stroke_coverage(x, hw), stroke_coverage(torch.sqrt((q * q).sum(-1) + _EPS),
                                                                        hw / cos_half))
        use_miter = (join[rows] == MITER) & (cos_half * st["miter"][gp][:, None].expand_as(e)[rows] >= 1)
        jc = torch.where(use_miter, miter, bevel)
        jc = torch.where(mn < 1e-6, round_join, jc)
        body = body.index_put(rows, jc)

    cap = st["cap"][gp][:, None]
    sub_len = sg.sub_len[poly.edge_inst[e]]
    dashed = st["dashed"][gp][:, None]
    any_dash = st["any_dash"]
    first, last = torch.zeros_like(sub_len), sub_len  # the on-set's extent along an open subpath
    if any_dash:
        c, dl, valid = st["dash_start"][gp], st["dash_len"][gp], st["dash_valid"][gp]
        period = st["period"][gp][:, None]
        offset = st["offset"][gp][:, None] if offset is None else offset
        # where the first and last dash start and end move with the offset (slope -1), not with the length
        df, dla = _dash_bounds(sub_len.detach(), offset, c, dl, valid, period)
        # the last dash ends at the subpath's end (moving with it) or at a fixed place of the pattern before it
        first = torch.where(dashed, df, first)
        last = torch.where(dashed & (dla < sub_len.detach()), dla, last)
    out = body
    if st["any_round_cap"]:
        sig_c = torch.where(closed, sigma, torch.minimum(torch.maximum(sigma, first), last))
        gap = (sigma - sig_c).abs()
        if any_dash:
            dg = _dash_gap(sig_c + offset, c, dl, valid, period)
            gap = gap + torch.where(dashed, dg, torch.zeros_like(dg))
        gap = torch.where(~closed & (last < first), torch.full_like(gap, float("inf")), gap)  # no dash at all
        rc = torch.where(gap > 0, stroke_coverage(torch.sqrt(n * n + gap * gap + _EPS), half), body)
        out = torch.where(cap == ROUND, rc, out)
    if st["any_flat_cap"]:
        ext = torch.where(cap == SQUARE, half, torch.zeros_like(half))
        inf = torch.full_like(sigma, float("inf"))
        lo = torch.where(closed, -inf, first - ext)
        hi = torch.where(closed, inf, torch.maximum(last + ext, first - ext))

        def clip(x):
            return torch.maximum(torch.minimum(x, hi), lo)

        along = clip(sigma + 0.5) - clip(sigma - 0.5)
        if any_dash:
            d2 = torch.minimum(dl + 2 * ext, period)  # square caps widen every dash by half the width each side
            c2 = c - ext
            dm = _dash_measure(clip(sigma + 0.5) + offset, c2, d2, period) - \
                _dash_measure(clip(sigma - 0.5) + offset, c2, d2, period)
            along = torch.where(dashed, dm, along)
        out = torch.where(cap == ROUND, out, body * along.clamp(0, 1))
    return out
