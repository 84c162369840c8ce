"""Gradient paints shared by both rasterisers: per-pixel colours of linear and radial gradients (SVG 1.1 sec. 13.2,
SVG 2's focal radius `fr`), evaluated at pixel centres, differentiable w.r.t. stops, offsets and geometry.

Linear: t is the projection of the pixel (mapped into gradient space by the inverse of the gradient's transform)
onto the vector (x1, y1) -> (x2, y2). Radial: t is the largest root of |q - C(t)| = r(t) with C(t) = F + t (C - F),
r(t) = fr + t (r - fr), r(t) >= 0 (the two-point conical gradient of Skia and the HTML canvas). Spread: pad clamps t
to [0, 1], repeat takes t mod 1, reflect folds t mod 2. The colour is the straight-RGBA linear interpolation
between stops (offsets made non-decreasing as SVG requires), with its alpha multiplied by the path's colour row.
"""

from __future__ import annotations

import torch

from .scene import Scene

_EPS = 1e-12


def _stacked(scene: Scene, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every gradient of the scene stacked (NG, B, ...), stops padded to the longest list with copies of the last."""
    grads = scene.gradients
    smax = max(g.offsets.shape[1] for g in grads)

    def pad(x: torch.Tensor) -> torch.Tensor:  # (B, S, ...) -> (B, smax, ...)
        extra = smax - x.shape[1]
        return x if extra == 0 else torch.cat([x, x[:, -1:].expand(-1, extra, *x.shape[2:])], 1)

    offsets = torch.stack([pad(torch.cummax(g.offsets, 1).values) for g in grads])
    colors = torch.stack([pad(g.colors) for g in grads])
    geom = torch.stack([g.geometry if g.kind == "radial" else
                        torch.cat([g.geometry, g.geometry.new_zeros(g.batch_size, 2)], 1) for g in grads])
    m = torch.stack([g.transform for g in grads])  # (NG, B, 2, 3)
    a, c, e = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    b, d, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    det = a * d - b * c
    det = torch.where(det.abs() < _EPS, torch.full_like(det, _EPS), det)
    inv = torch.stack([torch.stack([d, -c, c * f - d * e], -1), torch.stack([-b, a, b * e - a * f], -1)], -2) \
        / det[..., None, None]
    dev = offsets.device
    return {
        "offsets": offsets.to(dtype), "colors": colors.to(dtype), "geometry": geom.to(dtype), "inverse": inv.to(dtype),
        "radial": torch.tensor([g.kind == "radial" for g in grads], device=dev),
        "spread": torch.tensor([("pad", "reflect", "repeat").index(g.spread) for g in grads], device=dev),
    }


def gradient_t(q: torch.Tensor, geom: torch.Tensor, radial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient parameter t (R, N) at gradient-space points q (R, N, 2), and whether the point is painted at all
    (the outside of a radial cone is not)."""
    g = geom[:, None, :]
    qx, qy = q[..., 0], q[..., 1]
    # linear
    vx, vy = g[..., 2] - g[..., 0], g[..., 3] - g[..., 1]
    den = vx * vx + vy * vy
    t_lin = ((qx - g[..., 0]) * vx + (qy - g[..., 1]) * vy) / den.clamp(min=_EPS)
    t_lin = torch.where(den < _EPS, torch.ones_like(t_lin), t_lin)  # zero-length vector: the last stop (SVG)
    # radial (cx, cy, r, fx, fy, fr)
    cdx, cdy = g[..., 0] - g[..., 3], g[..., 1] - g[..., 4]
    pdx, pdy = qx - g[..., 3], qy - g[..., 4]
    dr = g[..., 2] - g[..., 5]
    fr = g[..., 5]
    qa = cdx * cdx + cdy * cdy - dr * dr
    qb = pdx * cdx + pdy * cdy + fr * dr
    qc = pdx * pdx + pdy * pdy - fr * fr
    disc = qb * qb - qa * qc
    root = torch.sqrt(disc.clamp(min=0) + _EPS)
    sign = torch.where(qa >= 0, 1.0, -1.0).to(q.dtype)
    small = qa.abs() < 1e-9
    t_rad = torch.where(small, qc / (2 * qb).where(qb.abs() > _EPS, torch.full_like(qb, _EPS)),
                        (qb + sign * root) / qa.where(~small, torch.ones_like(qa)))
    ok_rad = (disc >= 0) & (fr + t_rad * dr >= 0)
    rad = radial[:, None]
    return torch.where(rad, t_rad, t_lin), torch.where(rad, ok_rad, torch.ones_like(ok_rad))


def _spread(t: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    pad = t.clamp(0, 1)
    rep = t - torch.floor(t)
    u = t - 2 * torch.floor(t / 2)
    ref = torch.where(u > 1, 2 - u, u)
    s = spread[:, None]
    return torch.where(s == 0, pad, torch.where(s == 2, rep, ref))


def _ramp(t: torch.Tensor, offsets: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour (R, N, 4) at t (R, N) for stops (R, S) (non-decreasing), (R, S, 4): each t between
    the two stops around it (found by binary search, so memory is per pixel, not per pixel and stop); before the
    first stop its colour, past the last the last's, and at a repeated offset the later stop's."""
    s = offsets.shape[1]
    if s == 1:
        return colors[:, None, 0, :].expand(*t.shape, 4)
    if s <= 8:  # few stops: every segment's weight at once is cheaper than a search, and small (R, N, S - 1)
        o0, o1 = offsets[:, None, :-1], offsets[:, None, 1:]
        span = o1 - o0
        w = torch.where(span > 1e-9, (t[..., None] - o0) / span.clamp(min=1e-9), (t[..., None] >= o1).to(t.dtype))
        return colors[:, None, 0, :] + torch.einsum("rnk,rkc->rnc", w.clamp(0, 1), colors[:, 1:] - colors[:, :-1])
    k = torch.searchsorted(offsets.detach().contiguous(), t.detach().contiguous(), right=True).clamp(1, s - 1)
    o0, o1 = offsets.gather(1, k - 1), offsets.gather(1, k)  # (R, N) the stops around t
    span = o1 - o0
    w = torch.where(span > 1e-9, (t - o0) / span.clamp(min=1e-9), (t >= o1).to(t.dtype)).clamp(0, 1)
    idx = (k - 1)[..., None].expand(-1, -1, 4)
    c0, c1 = colors.gather(1, idx), colors.gather(1, idx + 1)  # (R, N, 4)
    return c0 + w[..., None] * (c1 - c0)


def layer_colors(scene: Scene, paint: torch.Tensor, gs: torch.Tensor, flat: torch.Tensor, px: torch.Tensor,
                 py: torch.Tensor) -> torch.Tensor:
    """(G, N, 4) straight RGBA per pixel of each layer: the layer's `flat` colour (G, 4) where `paint` (G,) is -1,
    else gradient `paint` of scene `gs` with its alpha times the flat alpha. px, py (G, N) pixel centres."""
    g_, n_ = px.shape
    out = flat[:, None, :].expand(g_, n_, 4)
    rows = torch.nonzero(paint >= 0).flatten()
    if rows.numel() == 0:
        return out
    st = _stacked(scene, flat.dtype)
    gi, si = paint[rows], gs[rows]
    inv = st["inverse"][gi, si]  # (R, 2, 3)
    x, y = px[rows], py[rows]
    q = torch.stack([inv[:, None, 0, 0] * x + inv[:, None, 0, 1] * y + inv[:, None, 0, 2],
                     inv[:, None, 1, 0] * x + inv[:, None, 1, 1] * y + inv[:, None, 1, 2]], -1)
    t, ok = gradient_t(q, st["geometry"][gi, si], st["radial"][gi])
    col = _ramp(_spread(t, st["spread"][gi]), st["offsets"][gi, si], st["colors"][gi, si])
    alpha = col[..., 3] * flat[rows, None, 3] * ok.to(col.dtype)
    col = torch.cat([col[..., :3], alpha[..., None]], -1)
    return out.index_put((rows,), col)
