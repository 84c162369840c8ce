"""Tiled rasteriser: work proportional to the area strokes cover, all vectorised, no Python loop over paths.

1. flatten every cubic into a polyline (`geometry.flatten`, adaptive piece count per segment);
2. cut each path's edges into chunks of `chunk` consecutive edges, take each chunk's bounding box padded by half
   the stroke width plus the antialiasing radius, and list the (scene, chunk, tile) overlaps with tensor ops;
3. evaluate distances only for the pixels of overlapping tiles, min-reduce per (scene, tile, path) -> one stroke
   layer per pair; fills get one layer per (scene, path, tile) with the winding number over all the path's edges;
4. sort layers by (scene, tile, painter's order), pack them densely per tile (depth D = most layers on a tile) and
   composite with a reverse cumulative product of (1 - alpha) (the "over" operator, Porter & Duff 1984).

The binning follows the tile-based rasterisers of GPU vector renderers (e.g. Li et al. 2016, "Efficient GPU path
rendering using scanline rasterization"; diffvg's bounding-volume culling), expressed as tensor ops.
"""

from __future__ import annotations

import torch

from .geometry import (DEFAULT_TOLERANCE, Polyline, distance, fill_coverage, flatten, inside_from_winding,
                       segment_distance2, stroke_coverage, winding_contribution)
from .scene import Scene, topology_tensors

DEFAULT_TILE = 8  # px per tile side: small tiles cull tightly; 8 measured fastest for the CLIPDraw scene on CPU
DEFAULT_CHUNK = 4  # edges per chunk: short chunks have tight boxes; measured on the CLIPDraw scene


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


def _tile_pairs(lo: torch.Tensor, hi: torch.Tensor, tile: int, ntx: int, nty: int) -> tuple[torch.Tensor, ...]:
    """Expand boxes (N, 2) [lo, hi] in pixels into (box index, tile index) pairs for every tile they touch."""
    x0 = torch.floor(lo[:, 0] / tile).long().clamp(min=0)
    y0 = torch.floor(lo[:, 1] / tile).long().clamp(min=0)
    x1 = torch.floor(hi[:, 0] / tile).long().clamp(max=ntx - 1)
    y1 = torch.floor(hi[:, 1] / tile).long().clamp(max=nty - 1)
    nx = (x1 - x0 + 1).clamp(min=0)
    ny = (y1 - y0 + 1).clamp(min=0)
    n = nx * ny
    src = torch.repeat_interleave(torch.arange(n.numel(), device=lo.device), n)
    local = torch.arange(src.numel(), device=lo.device) - _exclusive_cumsum(n)[src]
    nxs = nx[src]
    tiles = (y0[src] + local // nxs) * ntx + x0[src] + local % nxs
    return src, tiles


def _tile_pixels(tiles: torch.Tensor, tile: int, ntx: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of the given tiles: (N, 1, tile*tile) x and y."""
    off = torch.arange(tile, device=tiles.device, dtype=dtype) + 0.5
    ox = off.repeat(tile)  # pixel j of a tile sits at (j % tile, j // tile)
    oy = off.repeat_interleave(tile)
    tx = (tiles % ntx).to(dtype)[:, None] * tile
    ty = (tiles // ntx).to(dtype)[:, None] * tile
    return (tx + ox)[:, None], (ty + oy)[:, None]


def _stroke_layers(scene: Scene, poly: Polyline, tile: int, chunk: int, ntx: int, nty: int):
    """Stroke layers: keys (G,) = (scene, tile, path) flattened, alpha coverage (G, tile*tile)."""
    bsz, num_paths, dev = scene.batch_size, scene.num_paths, scene.device
    with torch.no_grad():
        count, start = poly.path_count, poly.path_start
        nchunk = (count + chunk - 1) // chunk  # (P,)
        chunk_path = torch.repeat_interleave(torch.arange(num_paths, device=dev), nchunk)  # (NC,)
        first = start[chunk_path] + (torch.arange(chunk_path.numel(), device=dev)
                                     - _exclusive_cumsum(nchunk)[chunk_path]) * chunk
        last = (start + count - 1)[chunk_path]
        slots = torch.minimum(first[:, None] + torch.arange(chunk, device=dev), last[:, None])  # (NC, C) edge ids
        # (B, NC, 2) boxes padded by half width + 0.5 px filter radius + slack
        a, b = poly.a.detach()[:, slots], poly.b.detach()[:, slots]  # (B, NC, C, 2)
        pad = (scene.widths.detach().clamp(min=0)[:, chunk_path] / 2 + 0.51)[..., None]
        lo = torch.minimum(a, b).amin(dim=2) - pad
        hi = torch.maximum(a, b).amax(dim=2) + pad
        src, tiles = _tile_pairs(lo.reshape(-1, 2), hi.reshape(-1, 2), tile, ntx, nty)
        pb, pc = src // chunk_path.numel(), src % chunk_path.numel()  # scene and chunk of each pair
        ppath = chunk_path[pc]
        keys = (pb * (ntx * nty) + tiles) * num_paths + ppath
        group_keys, inverse = torch.unique(keys, return_inverse=True)
        px, py = _tile_pixels(tiles, tile, ntx, scene.points.dtype)
    pair_slots = slots[pc]  # (Q, C)
    ea = poly.a[pb[:, None], pair_slots][..., None]  # (Q, C, 2, 1)
    eb = poly.b[pb[:, None], pair_slots][..., None]
    d2 = segment_distance2(px, py, ea[:, :, 0], ea[:, :, 1], eb[:, :, 0], eb[:, :, 1]).amin(dim=1)  # (Q, T*T)
    g = group_keys.numel()
    d2 = d2.new_zeros(g, d2.shape[1]).scatter_reduce(0, inverse[:, None].expand_as(d2), d2, "amin",
                                                     include_self=False)
    gpath = group_keys % num_paths
    gscene = group_keys // (num_paths * ntx * nty)
    half = (scene.widths[gscene, gpath] / 2)[:, None]
    return group_keys, stroke_coverage(distance(d2), half), gscene, gpath


def _fill_layers(scene: Scene, poly: Polyline, tile: int, ntx: int, nty: int):
    """Fill layers: keys (G,), coverage (G, tile*tile), for every (scene, filled path, tile) the path's box hits."""
    dev, num_paths, bsz = scene.device, scene.num_paths, scene.batch_size
    paths = topology_tensors(scene.topology, dev)["filled_paths"]  # (F,)
    with torch.no_grad():
        count = poly.path_count[paths] + 1  # + closing edge
        emax = int(count.max())
        slot = torch.arange(emax, device=dev)
        valid = slot[None] < count[:, None]  # (F, Emax)
        # edge ids into cat([edges, closing edges]); invalid slots point at the closing edge and are masked
        ids = torch.where(slot[None] < count[:, None] - 1, poly.path_start[paths, None] + slot[None],
                          poly.a.shape[1] + paths[:, None])
        all_a = torch.cat([poly.a.detach(), poly.close_a.detach()], 1)
        all_b = torch.cat([poly.b.detach(), poly.close_b.detach()], 1)
        a, b = all_a[:, ids], all_b[:, ids]  # (B, F, Emax, 2)
        lo = torch.minimum(a, b).amin(dim=2) - 0.51
        hi = torch.maximum(a, b).amax(dim=2) + 0.51
        src, tiles = _tile_pairs(lo.reshape(-1, 2), hi.reshape(-1, 2), tile, ntx, nty)
        nf = paths.numel()
        pb, pf = src // nf, src % nf
        keys = (pb * (ntx * nty) + tiles) * num_paths + paths[pf]
        px, py = _tile_pixels(tiles, tile, ntx, scene.points.dtype)
    all_a = torch.cat([poly.a, poly.close_a], 1)
    all_b = torch.cat([poly.b, poly.close_b], 1)
    ea = all_a[pb[:, None], ids[pf]][..., None]  # (Q, Emax, 2, 1)
    eb = all_b[pb[:, None], ids[pf]][..., None]
    m = valid[pf][..., None]  # (Q, Emax, 1)
    ax, ay, bx, by = ea[:, :, 0], ea[:, :, 1], eb[:, :, 0], eb[:, :, 1]
    d2 = segment_distance2(px, py, ax, ay, bx, by)
    d2 = torch.where(m, d2, torch.full_like(d2, float("inf"))).amin(dim=1)
    wind = (winding_contribution(px, py, ax, ay, bx, by) * m).sum(dim=1)
    cov = fill_coverage(distance(d2), inside_from_winding(wind, scene.fill_rule))
    return keys, cov, pb, paths[pf]


def render_tiled(scene: Scene, tolerance: float = DEFAULT_TOLERANCE, tile: int = DEFAULT_TILE,
                 chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """(B, H, W, 4) premultiplied RGBA over `scene.background`; same result as `render_reference`."""
    if not (isinstance(tile, int) and 1 <= tile <= 64):
        raise ValueError(f"`tile` must be an int in [1, 64], got {tile!r}")
    if not (isinstance(chunk, int) and 1 <= chunk <= 64):
        raise ValueError(f"`chunk` must be an int in [1, 64], got {chunk!r}")
    poly = flatten(scene, tolerance)
    bsz, num_paths, dev, dtype = scene.batch_size, scene.num_paths, scene.device, scene.points.dtype
    ntx, nty = -(-scene.width // tile), -(-scene.height // tile)
    ntiles = ntx * nty

    # 1. layers: (key, coverage, colour); key orders by scene, tile, path, then fill (0) below stroke (1)
    keys, cov, gs, gp = _stroke_layers(scene, poly, tile, chunk, ntx, nty)
    keys, colours = [keys * 2 + 1], [scene.stroke_colors[gs, gp]]
    covs = [cov]
    has_fill = scene.fill_colors is not None and scene.topology.filled is not None and any(scene.topology.filled)
    if has_fill:
        fkeys, fcov, fs, fp = _fill_layers(scene, poly, tile, ntx, nty)
        keys.append(fkeys * 2)
        covs.append(fcov)
        colours.append(scene.fill_colors[fs, fp])
    keys, cov, colours = torch.cat(keys), torch.cat(covs), torch.cat(colours)
    order = torch.argsort(keys)
    keys, cov, colours = keys[order], cov[order], colours[order]
    alpha = cov * colours[:, 3:4]  # (G, T*T)

    # 2. pack layers densely per tile: (tiles with any layer, depth, pixels)
    with torch.no_grad():
        scene_tile = keys // (2 * num_paths)
        active, counts = torch.unique_consecutive(scene_tile, return_counts=True)
        slot = torch.repeat_interleave(torch.arange(active.numel(), device=dev), counts)
        rank = torch.arange(keys.numel(), device=dev) - torch.repeat_interleave(_exclusive_cumsum(counts), counts)
        depth = int(counts.max()) if counts.numel() else 0
    npix = tile * tile
    alpha_d = alpha.new_zeros(active.numel(), depth, npix).index_put((slot, rank), alpha)
    rgb_d = colours.new_zeros(active.numel(), depth, 3).index_put((slot, rank), colours[:, :3])

    # 3. composite back to front: layer i is seen through prod_{j > i} (1 - alpha_j)
    through = torch.cumprod((1 - alpha_d).flip(1), dim=1).flip(1)  # inclusive suffix products
    behind = torch.cat([through[:, 1:], through.new_ones(active.numel(), 1, npix)], 1)  # exclusive
    weight = alpha_d * behind  # (A, D, T*T)
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=dev, dtype=dtype)
    bg = torch.cat([bg[:3] * bg[3], bg[3:]])  # premultiplied
    rest = through[:, 0, :, None] if depth else alpha.new_ones(0, npix, 1)  # (A, T*T, 1)
    rgb = torch.einsum("adp,adc->apc", weight, rgb_d) + rest * bg[:3]
    a = weight.sum(1)[..., None] + rest * bg[3]
    tiles_out = bg.repeat(bsz * ntiles, npix, 1).index_put((active,), torch.cat([rgb, a], -1))

    # 4. tiles -> image
    img = tiles_out.reshape(bsz, nty, ntx, tile, tile, 4).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(bsz, nty * tile, ntx * tile, 4)[:, :scene.height, :scene.width]
