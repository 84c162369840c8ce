"""SVG out: `to_svg`, following SVG 1.1 (https://www.w3.org/TR/SVG11/).

`to_svg` writes one `<path>` per scene path with round caps and joins, which is what the distance-based stroke
rasteriser draws, so independent renderers (resvg, browsers) agree with our raster. The reader is `svg_read`.
"""

from __future__ import annotations

from .scene import Scene


def _num(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(min(max(float(c), 0.0), 1.0) * 255):02x}" for c in rgb)


def _opacity(a: float) -> str:
    return _num(min(max(float(a), 0.0), 1.0))


def to_svg(scene: Scene, index: int = 0) -> str:
    """Scene `index` of the batch as an SVG document (colours clamped to [0, 1] and written as 8-bit hex)."""
    if not -scene.batch_size <= index < scene.batch_size:
        raise ValueError(f"`index` must be in [0, {scene.batch_size}), got {index}")
    topo = scene.topology
    pts = scene.points[index].detach().double().cpu().tolist()
    widths = scene.widths[index].detach().double().cpu().tolist()
    strokes = scene.stroke_colors[index].detach().double().cpu().tolist()
    fills = None if scene.fill_colors is None else scene.fill_colors[index].detach().double().cpu().tolist()
    w, h = scene.width, scene.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    if scene.background is not None and scene.background[3] > 0:
        bg = scene.background
        out.append(f'<rect id="background" x="0" y="0" width="{w}" height="{h}" fill="{_hex(bg[:3])}" '
                   f'fill-opacity="{_opacity(bg[3])}"/>')
    rule = ' fill-rule="evenodd"' if scene.fill_rule == "evenodd" else ""
    for p, (start, n) in enumerate(zip(topo.point_offsets, topo.points_per_path)):
        q = pts[start:start + n]
        ring = q + [q[0]] if topo.closed[p] else q
        d = [f"M {_num(ring[0][0])} {_num(ring[0][1])}"]
        for k in range(topo.num_segments[p]):
            c = ring[3 * k + 1:3 * k + 4]
            d.append("C " + " ".join(f"{_num(x)} {_num(y)}" for x, y in c))
        if topo.closed[p]:
            d.append("Z")
        filled = fills is not None and topo.filled is not None and topo.filled[p]
        fill = f'fill="{_hex(fills[p][:3])}" fill-opacity="{_opacity(fills[p][3])}"{rule}' if filled else 'fill="none"'
        stroke = strokes[p]
        out.append(f'<path d="{" ".join(d)}" {fill} stroke="{_hex(stroke[:3])}" '
                   f'stroke-opacity="{_opacity(stroke[3])}" stroke-width="{_num(widths[p])}" '
                   'stroke-linecap="round" stroke-linejoin="round"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
