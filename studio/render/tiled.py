"""Tiled rasteriser: work proportional to the area strokes cover, all vectorised, no Python loop over paths.

1. flatten every cubic into a polyline (`geometry.flatten`, adaptive piece count per segment and scene);
2. cut each path's edges into chunks of `chunk` consecutive edges, take each chunk's bounding box padded by half
   the stroke width plus the antialiasing radius, and list the (chunk, tile) overlaps with tensor ops;
3. find the nearest edge for the pixels of overlapping tiles only, without autograd, min-reduced per (scene, tile,
   path); re-evaluate just that edge with gradient -> one stroke layer per (scene, tile, path). Fills: winding
   numbers from scanline crossings (sorted per row, one binary search per pixel) and the boundary distance only in
   tiles the boundary touches -> one fill layer per (scene, tile, path) that is inside or near the boundary;
4. sort layers by (scene, tile, painter's order, fill below stroke) and composite them with the "over" operator
   (Porter & Duff 1984) level by level, each level touching only the tiles that have a layer at that depth.

The binning follows tile-based GPU vector rasterisers (e.g. Li et al. 2016, "Efficient GPU Path Rendering Using
Scanline Rasterization"; diffvg's bounding-volume culling), expressed as tensor ops.
"""

from __future__ import annotations

import torch

from .geometry import (
    DEFAULT_TOLERANCE,
    Polyline,
    crossing_direction,
    distance,
    fill_coverage,
    fill_edges,
    flatten,
    segment_crossings,
    segment_distance2,
    segment_hits,
    stroke_coverage,
)
from .paint import layer_colors
from .scene import Scene, topology_tensors
from .stroke import edge_pad, stroke_geometry, style_tensors, styled_coverage

DEFAULT_TILE = 4  # px per tile side: small tiles cull tightly; fastest for the CLIPDraw benchmark scene on CPU
DEFAULT_CHUNK = 2  # edges per chunk: short chunks have tight boxes; fastest with tile 4 on the CLIPDraw scene
_SUBPIXEL = 1024  # fixed-point steps per pixel for crossing positions in the scanline winding keys


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


def _slices(rows: int, cost_per_row: int, budget: int = 1 << 21) -> list[tuple[int, int]]:
    """Row ranges whose `rows x cost_per_row` work tensors hold at most ~`budget` elements (bounds peak memory)."""
    step = max(1, budget // max(1, cost_per_row))
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


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


def _edge_distance(a: torch.Tensor, b: torch.Tensor, edges: torch.Tensor, px: torch.Tensor,
                   py: torch.Tensor) -> torch.Tensor:
    """Distance from every pixel to its selected edge, with gradient: (G, N) for `edges` (G, N) edge ids.

    The nearest edge is found without autograd; re-evaluating only that edge gives the same value and the same
    gradient as autograd through `min` (which also routes the gradient to the argmin), at a fraction of the memory
    and backward cost.
    """
    ea, eb = a[edges], b[edges]  # (G, N, 2)
    return distance(segment_distance2(px[:, 0], py[:, 0], ea[..., 0], ea[..., 1], eb[..., 0], eb[..., 1]))


def _nearest_edges(ea: torch.Tensor, eb: torch.Tensor, start: torch.Tensor, count: torch.Tensor, pad: torch.Tensor,
                   inst_scene: torch.Tensor, inst_path: torch.Tensor, num_paths: int, tile: int, chunk: int, ntx: int,
                   nty: int, near: float | None = None) -> tuple[torch.Tensor, ...]:
    """For edges stored per instance (contiguous runs `start`, `count`), find every (scene, tile, path) group whose
    chunk boxes (padded by `pad`, per edge (E,), the chunk taking its largest) touch the tile, and the nearest edge
    to each of its pixels.

    Returns sorted group keys (G,) = (scene * tiles + tile) * num_paths + path and edge ids (G, tile*tile); with
    `near`, also every (group, pixel, edge) closer than `near` to the pixel centre, as three (K,) index lists.
    Runs without autograd; callers re-evaluate the chosen edges with gradient (`_edge_distance`).
    """
    dev = ea.device
    nchunk = (count + chunk - 1) // chunk
    chunk_inst = torch.repeat_interleave(torch.arange(count.numel(), device=dev), nchunk)  # (NC,)
    first = start[chunk_inst] + (torch.arange(chunk_inst.numel(), device=dev)
                                 - _exclusive_cumsum(nchunk)[chunk_inst]) * chunk
    last = (start + count - 1)[chunk_inst]
    slots = torch.minimum(first[:, None] + torch.arange(chunk, device=dev), last[:, None])  # (NC, C) edge ids
    a, b = ea[slots], eb[slots]  # (NC, C, 2)
    cpad = pad[slots].amax(dim=1, keepdim=True)
    pchunk, tiles = _tile_pairs(torch.minimum(a, b).amin(dim=1) - cpad, torch.maximum(a, b).amax(dim=1) + cpad,
                                tile, ntx, nty)
    pinst = chunk_inst[pchunk]
    keys = (inst_scene[pinst] * (ntx * nty) + tiles) * num_paths + inst_path[pinst]
    group_keys, inverse = torch.unique(keys, return_inverse=True)
    # distance and edge id packed into one int64 (the float32 bit pattern of a non-negative number orders like the
    # number), min-reduced per (group, pixel) slice by slice to bound memory
    npix = tile * tile
    best = torch.full((group_keys.numel(), npix), torch.iinfo(torch.long).max, dtype=torch.long, device=dev)
    real = first[:, None] + torch.arange(chunk, device=dev) <= last[:, None]  # (NC, C): not a repeated last edge
    close = []
    for lo, hi in _slices(pchunk.numel(), chunk * npix):
        px, py = _tile_pixels(tiles[lo:hi], tile, ntx, ea.dtype)  # (q, 1, N)
        pair_slots = slots[pchunk[lo:hi]]  # (q, C)
        qa, qb = ea[pair_slots][..., None], eb[pair_slots][..., None]  # (q, C, 2, 1)
        every = segment_distance2(px, py, qa[:, :, 0], qa[:, :, 1], qb[:, :, 0], qb[:, :, 1])  # (q, C, N)
        d2, arg = every.min(dim=1)  # (q, N)
        packed = (d2.float().view(torch.int32).long() << 32) | pair_slots.gather(1, arg)
        best.scatter_reduce_(0, inverse[lo:hi, None].expand_as(packed), packed, "amin")
        if near is not None:
            i, c, j = torch.nonzero((every < near * near) & real[pchunk[lo:hi]][..., None], as_tuple=True)
            close.append(torch.stack([inverse[lo + i], j, pair_slots[i, c]]))
    if near is not None:
        found = torch.cat(close, 1) if close else torch.zeros(3, 0, dtype=torch.long, device=dev)
        return group_keys, best & 0xFFFFFFFF, *found.unbind(0)
    return group_keys, best & 0xFFFFFFFF


def _stroke_layers(scene: Scene, poly: Polyline, tile: int, chunk: int, ntx: int, nty: int):
    """Stroke layers: keys (G,) = (scene, tile, path) flattened, coverage (G, tile*tile), scene and path per layer.
    One layer per path: the nearest edge is sought over all its subpaths."""
    num_paths, dev = scene.num_paths, scene.device
    styled = not scene.topology.round_solid
    sg = stroke_geometry(poly, scene.topology) if styled else None
    with torch.no_grad():
        inst = torch.arange(poly.path_count.numel(), device=dev)  # b * P + p
        if styled:
            pad = edge_pad(poly, scene.widths, scene.topology, sg)
        else:  # half width + 0.5 px filter + slack
            pad = (scene.widths.detach().clamp(min=0).reshape(-1) / 2 + 0.51)[poly.inst_path[poly.edge_inst]]
        keys, edges = _nearest_edges(poly.a.detach(), poly.b.detach(), poly.path_start, poly.path_count, pad,
                                     inst // num_paths, inst % num_paths, num_paths, tile, chunk, ntx, nty)
        gpath, gscene = keys % num_paths, keys // (num_paths * ntx * nty)
        px, py = _tile_pixels((keys // num_paths) % (ntx * nty), tile, ntx, scene.points.dtype)
    half = (scene.widths[gscene, gpath] / 2)[:, None]
    if styled:  # evaluated only at pixels within reach of their nearest edge (elsewhere the coverage is 0)
        st = style_tensors(scene.topology, dev, scene.points.dtype)
        with torch.no_grad():
            ea, eb = poly.a.detach()[edges], poly.b.detach()[edges]
            d2 = segment_distance2(px[:, 0], py[:, 0], ea[..., 0], ea[..., 1], eb[..., 0], eb[..., 1])
            rows = torch.nonzero(d2 < pad[edges] ** 2, as_tuple=True)
        offset = None if scene.dash_offsets is None else scene.dash_offsets[gscene, gpath][rows[0]][:, None]
        live = styled_coverage(px[:, 0][rows][:, None], py[:, 0][rows][:, None], edges[rows][:, None], poly, sg,
                               gpath[rows[0]], half[rows[0]], st, offset)[:, 0]
        cov = torch.zeros(edges.shape, dtype=live.dtype, device=dev).index_put(rows, live)
    else:
        cov = stroke_coverage(_edge_distance(poly.a, poly.b, edges, px, py), half)
    return keys, cov, gscene, gpath, px[:, 0], py[:, 0]


def _fill_layers(scene: Scene, poly: Polyline, tile: int, chunk: int, ntx: int, nty: int):
    """Fill layers for every (scene, filled path, tile) with any pixel inside or near the boundary.

    Inside/outside comes from scanline crossings: each edge crosses the pixel-centre rows between its end points at
    one x; sorting the crossings by (path, row, x) and summing their signs from the right gives every pixel's
    winding number with one binary search (the crossing-number rule, as in scanline rasterisers). A path's
    subpaths (each with its closing edge) are one edge set, so holes follow from the winding and the path's fill
    rule. The distance to the boundary, needed only within half a pixel of it, comes from the same tile binning as
    strokes.
    """
    dev, num_paths, dtype = scene.device, scene.num_paths, scene.points.dtype
    width, height = scene.width, scene.height
    paths = topology_tensors(scene.topology, dev)["filled_paths"]  # (F,)
    inst = (torch.arange(scene.batch_size, device=dev)[:, None] * num_paths + paths).reshape(-1)  # (NF,) = b*P+p
    nf = inst.numel()
    ids, owner, fstart, count = fill_edges(poly, inst)
    all_a = torch.cat([poly.a, poly.close_a])[ids]  # (EF, 2)
    all_b = torch.cat([poly.b, poly.close_b])[ids]
    with torch.no_grad():
        evenodd = torch.tensor([scene.path_fill_rule(p) == "evenodd" for p in range(num_paths)], device=dev)
        fa, fb = all_a.detach(), all_b.detach()
        # 1. crossings of edges with pixel-centre rows: rows r with min(ay, by) <= r + 0.5 < max(ay, by)
        ymin, ymax = torch.minimum(fa[:, 1], fb[:, 1]), torch.maximum(fa[:, 1], fb[:, 1])
        r0 = torch.ceil(ymin - 0.5).clamp(0, height).long()
        r1 = torch.ceil(ymax - 0.5).clamp(0, height).long()
        nrow = (r1 - r0).clamp(min=0)
        cedge = torch.repeat_interleave(torch.arange(owner.numel(), device=dev), nrow)
        row = r0[cedge] + torch.arange(cedge.numel(), device=dev) - _exclusive_cumsum(nrow)[cedge]
        ya, yb, xa, xb = fa[cedge, 1], fb[cedge, 1], fa[cedge, 0], fb[cedge, 0]
        xc = xa + (row.to(dtype) + 0.5 - ya) * (xb - xa) / (yb - ya)
        sign = torch.where(yb > ya, 1, -1)
        # one int64 key per crossing: its (instance, row) band, then x in 1/1024 px clamped into the band (rounded
        # up, so a crossing counts for a pixel centre exactly when it lies strictly to its right)
        band = (width + 3) * _SUBPIXEL
        ckey = (owner[cedge] * height + row) * band + torch.ceil((xc.clamp(-1, width + 1) + 1) * _SUBPIXEL).long()
        ckey, order = torch.sort(ckey)
        suffix = torch.cat([sign.new_zeros(1), torch.cumsum(sign[order], 0)])  # (C + 1,)
        # 2. candidate tiles: each filled instance's box
        lo = torch.full((nf, 2), float("inf"), dtype=dtype, device=dev)
        hi = torch.full((nf, 2), float("-inf"), dtype=dtype, device=dev)
        lo = lo.scatter_reduce(0, owner[:, None].expand(-1, 2), torch.minimum(fa, fb), "amin")
        hi = hi.scatter_reduce(0, owner[:, None].expand(-1, 2), torch.maximum(fa, fb), "amax")
        src, tiles = _tile_pairs(lo - 0.51, hi + 0.51, tile, ntx, nty)
        pinst = inst[src]
        keys = ((pinst // num_paths) * (ntx * nty) + tiles) * num_paths + pinst % num_paths
        px, py = _tile_pixels(tiles, tile, ntx, dtype)  # (Q, 1, N)
        prow = py[:, 0].floor().clamp(max=height - 1)  # rows past the canvas are cropped later; keep them in band
        base = (src[:, None] * height + prow.long()) * band
        pos = torch.searchsorted(ckey, base + ((px[:, 0].clamp(max=width + 0.5) + 1) * _SUBPIXEL).long(), right=True)
        end = torch.searchsorted(ckey, base + band - 1, right=True)
        wind = suffix[end] - suffix[pos]  # (Q, N)
        inside = torch.where(evenodd[pinst % num_paths][:, None], (wind % 2) != 0, wind != 0)
        npix = tile * tile
        # 3. boundary tiles: nearest boundary edge per pixel, and every edge that crosses its one-pixel segment
        bkeys, bedges, cgroup, cpix, cedge = _nearest_edges(
            fa, fb, fstart, count, torch.full((owner.numel(),), 0.51, dtype=dtype, device=dev), inst // num_paths,
            inst % num_paths, num_paths, tile, chunk, ntx, nty, near=0.5)
        at = torch.searchsorted(bkeys, keys).clamp(max=max(bkeys.numel() - 1, 0))
        near = (bkeys[at] == keys) if bkeys.numel() else torch.zeros_like(keys, dtype=torch.bool)
        keep = near | inside.any(dim=1)  # drop tiles that are wholly outside
        keys, src, px, py, wind, near, at = keys[keep], src[keep], px[keep], py[keep], wind[keep], near[keep], \
            at[keep]
        rows = torch.nonzero(near).flatten()
        row_of = torch.full((bkeys.numel(),), -1, dtype=torch.long, device=dev)
        row_of[at[rows]] = rows  # boundary group -> kept layer
        # only edges within half a pixel of a centre can cross its segment: test those (sparse), not every pair
        cx, cy = _tile_pixels(bkeys[cgroup] // num_paths % (ntx * nty), tile, ntx, dtype)
        cx, cy = cx[:, 0].gather(1, cpix[:, None])[:, 0], cy[:, 0].gather(1, cpix[:, None])[:, 0]
        ne = bedges[cgroup, cpix]
        cnx, cny = crossing_direction(cx, cy, fa[ne, 0], fa[ne, 1], fb[ne, 0], fb[ne, 1])
        h = segment_hits(cx, cy, cnx, cny, fa[cedge, 0], fa[cedge, 1], fb[cedge, 0], fb[cedge, 1]) \
            & (row_of[cgroup] >= 0)
        hit_pix, hit_edge = row_of[cgroup[h]] * npix + cpix[h], cedge[h]
        # whether each crossing edge lies strictly right of the pixel on its row, by the scanline's own arithmetic
        hx, hy = px[:, 0].reshape(-1)[hit_pix], py[:, 0].reshape(-1)[hit_pix]
        hrow = hy.floor().clamp(max=height - 1)
        ya, yb, xa, xb = fa[hit_edge, 1], fb[hit_edge, 1], fa[hit_edge, 0], fb[hit_edge, 0]
        xc = xa + (hrow + 0.5 - ya) * (xb - xa) / torch.where(yb == ya, torch.ones_like(ya), yb - ya)
        left = torch.ceil((xc.clamp(-1, width + 1) + 1) * _SUBPIXEL).long() > \
            ((hx.clamp(max=width + 0.5) + 1) * _SUBPIXEL).long()
    # the crossings again, with gradient (edges, and the direction from each pixel's nearest edge)
    hg = torch.div(hit_pix, npix, rounding_mode="floor")
    ne = bedges[at[hg], hit_pix % npix]
    hnx, hny = crossing_direction(hx, hy, all_a[ne, 0], all_a[ne, 1], all_b[ne, 0], all_b[ne, 1])
    t, step, before = segment_crossings(hx, hy, hnx, hny, all_a[hit_edge, 0], all_a[hit_edge, 1], all_b[hit_edge, 0],
                                        all_b[hit_edge, 1], left)
    pinst = inst[src]
    odd = evenodd[pinst % num_paths][:, None].expand(-1, npix)
    cov = fill_coverage(wind.reshape(-1), odd.reshape(-1), hit_pix, t, step, before).reshape(wind.shape)
    return keys, cov, pinst // num_paths, pinst % num_paths, px[:, 0], py[:, 0]


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
    styles = scene.topology.all_styles
    shaded = bool(scene.gradients)
    has_fill = scene.fill_colors is not None and scene.topology.filled is not None and any(scene.topology.filled)
    # Fills only (every stroke transparent and nothing to differentiate there, e.g. Vectorize's shapes): no stroke
    # layer can show, so none is built (they were about a third of such a render).
    no_strokes = has_fill and not (scene.stroke_colors.requires_grad or scene.widths.requires_grad) and not bool(
        (scene.stroke_colors[..., 3] > 0).any())
    keys, covs, colours = [], [], []
    if not no_strokes:
        skeys, cov, gs, gp, spx, spy = _stroke_layers(scene, poly, tile, chunk, ntx, nty)
        if shaded:
            stroke_paint = torch.tensor([-1 if s.stroke_paint is None else s.stroke_paint for s in styles],
                                        device=dev)
            colours.append(layer_colors(scene, stroke_paint[gp], gs, scene.stroke_colors[gs, gp], spx, spy))
        else:
            colours.append(scene.stroke_colors[gs, gp])
        keys.append(skeys * 2 + 1)
        covs.append(cov)
    if has_fill:
        fkeys, fcov, fs, fp, fpx, fpy = _fill_layers(scene, poly, tile, chunk, ntx, nty)
        keys.append(fkeys * 2)
        covs.append(fcov)
        if shaded:
            fill_paint = torch.tensor([-1 if s.fill_paint is None else s.fill_paint for s in styles], device=dev)
            colours.append(layer_colors(scene, fill_paint[fp], fs, scene.fill_colors[fs, fp], fpx, fpy))
        else:
            colours.append(scene.fill_colors[fs, fp])
    keys, cov, colours = torch.cat(keys), torch.cat(covs), torch.cat(colours)
    order = torch.argsort(keys)
    keys, cov, colours = keys[order], cov[order], colours[order]
    alpha = cov * (colours[..., 3] if shaded else colours[:, 3:4])  # (G, T*T)

    # 2. order layers level by level: level d holds the d-th layer (painter's order) of every tile that has more
    # than d layers; with tiles sorted by layer count, those tiles are a prefix, so each level is one contiguous run
    with torch.no_grad():
        scene_tile = keys // (2 * num_paths)
        active, counts = torch.unique_consecutive(scene_tile, return_counts=True)
        slot = torch.repeat_interleave(torch.arange(active.numel(), device=dev), counts)
        rank = torch.arange(keys.numel(), device=dev) - torch.repeat_interleave(_exclusive_cumsum(counts), counts)
        by_count = torch.argsort(counts, descending=True, stable=True)  # tile order, deepest first
        position = torch.empty_like(by_count)
        position[by_count] = torch.arange(by_count.numel(), device=dev)
        level_order = torch.argsort(rank * active.numel() + position[slot])
        per_level = torch.bincount(rank, minlength=1).tolist() if keys.numel() else []  # tiles with a layer at d
    npix = tile * tile
    rgba = torch.cat([colours[..., :3], torch.ones_like(colours[..., :1])], -1)[level_order]  # (G, 4) or (G, N, 4)
    alpha = alpha[level_order]

    # 3. composite back to front with the "over" operator (Porter & Duff 1984), one level at a time: work is the
    # number of layers, not tiles x deepest tile. (A reverse cumulative product of (1 - alpha) would do it in one op,
    # but its backward takes a slow path whenever a layer is fully opaque, which strokes of alpha 1 always are.)
    bg = torch.tensor(scene.background or (0.0, 0.0, 0.0, 0.0), device=dev, dtype=dtype)
    bg = torch.cat([bg[:3] * bg[3], bg[3:]])  # premultiplied
    cur = bg.expand(active.numel(), npix, 4) + alpha.sum() * 0  # "+ 0": keeps the graph when nothing is visible
    done = []
    # split, not slice: the backward of a split is one concatenation, a slice's allocates the whole input each time
    for a, c in zip(alpha.split(per_level), rgba.split(per_level)):  # (n, N), (n, 4)
        cur, finished = cur.split([a.shape[0], cur.shape[0] - a.shape[0]])  # tiles without a layer here are done
        done.append(finished)
        cur = cur * (1 - a[..., None]) + (c if shaded else c[:, None, :]) * a[..., None]
    done.append(cur)
    out = torch.cat(done[::-1])  # (A, N, 4) in `by_count` order
    tiles_out = bg.repeat(bsz * ntiles, npix, 1).index_put((active[by_count],), out)

    # 4. tiles -> image
    img = tiles_out.reshape(bsz, nty, ntx, tile, tile, 4).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(bsz, nty * tile, ntx * tile, 4)[:, :scene.height, :scene.width]
