"""SVG out: `to_svg`, following SVG 1.1 (https://www.w3.org/TR/SVG11/).

`to_svg` writes one `<path>` per scene path (all its subpaths in one `d`) with what the renderer draws: its caps,
joins, miter limit, dash pattern and offset, fill rule, group opacity (`<g opacity>`), group clips (a nested `<svg>`
viewport with `overflow="hidden"` and an identity viewBox), and gradient paints (in
`<defs>`, user-space units, with the gradient-to-canvas matrix as `gradientTransform`), so independent renderers
(resvg, browsers) agree with our raster and `from_svg` reads the same scene back. The reader is `svg_read`.
"""

from __future__ import annotations

import torch

from .scene import PathStyle, Scene


def _num(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(min(max(float(c), 0.0), 1.0) * 255):02x}" for c in rgb)


def _opacity(a: float) -> str:
    return _num(min(max(float(a), 0.0), 1.0))


def _gradient(scene: Scene, k: int, index: int) -> str:
    g = scene.gradients[k]
    offs = torch.cummax(g.offsets[index].detach(), 0).values.double().cpu().tolist()
    cols = g.colors[index].detach().double().cpu().tolist()
    geo = [_num(v) for v in g.geometry[index].detach().double().cpu().tolist()]
    m = g.transform[index].detach().double().cpu().tolist()
    mat = " ".join(_num(v) for v in (m[0][0], m[1][0], m[0][1], m[1][1], m[0][2], m[1][2]))
    if g.kind == "linear":
        head = (f'<linearGradient id="g{k}" gradientUnits="userSpaceOnUse" x1="{geo[0]}" y1="{geo[1]}" '
                f'x2="{geo[2]}" y2="{geo[3]}"')
    else:
        head = (f'<radialGradient id="g{k}" gradientUnits="userSpaceOnUse" cx="{geo[0]}" cy="{geo[1]}" r="{geo[2]}" '
                f'fx="{geo[3]}" fy="{geo[4]}" fr="{geo[5]}"')
    out = [f'{head} gradientTransform="matrix({mat})" spreadMethod="{g.spread}">']
    for o, c in zip(offs, cols):
        out.append(f'<stop offset="{_num(min(max(o, 0.0), 1.0))}" stop-color="{_hex(c[:3])}" '
                   f'stop-opacity="{_opacity(c[3])}"/>')
    out.append(f"</{g.kind}Gradient>")
    return "".join(out)


def _stroke_style(style: PathStyle, offset: float) -> str:
    out = f'stroke-linecap="{style.cap}" stroke-linejoin="{style.join}"'
    if style.join == "miter":
        out += f' stroke-miterlimit="{_num(style.miter_limit)}"'
    if style.dash:
        out += f' stroke-dasharray="{" ".join(_num(d) for d in style.dash)}"'
        if offset:
            out += f' stroke-dashoffset="{_num(offset)}"'
    return out


def to_svg(scene: Scene, index: int = 0) -> str:
    """Scene `index` of the batch as an SVG document (colours clamped to [0, 1] and written as 8-bit hex)."""
    if not -scene.batch_size <= index < scene.batch_size:
        raise ValueError(f"`index` must be in [0, {scene.batch_size}), got {index}")
    index = index % scene.batch_size
    topo = scene.topology
    pts = scene.points[index].detach().double().cpu().tolist()
    widths = scene.widths[index].detach().double().cpu().tolist()
    strokes = scene.stroke_colors[index].detach().double().cpu().tolist()
    fills = None if scene.fill_colors is None else scene.fill_colors[index].detach().double().cpu().tolist()
    dash_offsets = [s.dash_offset for s in topo.all_styles] if scene.dash_offsets is None else \
        scene.dash_offsets[index].detach().double().cpu().tolist()
    w, h = scene.width, scene.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    if scene.gradients:
        out.append("<defs>" + "".join(_gradient(scene, k, index) for k in range(len(scene.gradients))) + "</defs>")
    if scene.background is not None and scene.background[3] > 0:
        bg = scene.background
        out.append(f'<rect id="background" x="0" y="0" width="{w}" height="{h}" fill="{_hex(bg[:3])}" '
                   f'fill-opacity="{_opacity(bg[3])}"/>')
    sub_of = topo.subpath_path
    offsets, per = topo.subpath_offsets, topo.points_per_subpath
    d_of: list[list[str]] = [[] for _ in range(topo.num_paths)]
    for c in range(topo.num_subpaths):
        q = pts[offsets[c]:offsets[c] + per[c]]
        ring = q + [q[0]] if topo.closed[c] else q
        d = d_of[sub_of[c]]
        d.append(f"M {_num(ring[0][0])} {_num(ring[0][1])}")
        for k in range(topo.num_segments[c]):
            cp = ring[3 * k + 1:3 * k + 4]
            d.append("C " + " ".join(f"{_num(x)} {_num(y)}" for x, y in cp))
        if topo.closed[c]:
            d.append("Z")
    groups, open_groups = list(topo.groups or ()), []
    for p in range(topo.num_paths):
        while groups and groups[0][0] == p:  # outermost first
            g = groups.pop(0)
            close = ""
            if g[2] < 1 or len(g) < 4 or g[3] is None:
                out.append(f'<g opacity="{_opacity(g[2])}">')
                close = "</g>"
            if len(g) > 3 and g[3] is not None:  # a clip: a nested viewport of identity mapping (overflow hidden)
                x0, y0, x1, y1 = (_num(v) for v in g[3])
                vb = f"{x0} {y0} {_num(g[3][2] - g[3][0])} {_num(g[3][3] - g[3][1])}"
                out.append(f'<svg x="{x0}" y="{y0}" width="{vb.split()[2]}" height="{vb.split()[3]}" '
                           f'viewBox="{vb}" overflow="hidden">')
                close = "</svg>" + close
            open_groups.append((g, close))
        style = topo.style(p)
        filled = fills is not None and topo.filled is not None and topo.filled[p]
        if filled:
            paint = _hex(fills[p][:3]) if style.fill_paint is None else f"url(#g{style.fill_paint})"
            rule = scene.path_fill_rule(p)
            fill = f'fill="{paint}" fill-opacity="{_opacity(fills[p][3])}" fill-rule="{rule}"'
        else:
            fill = 'fill="none"'
        stroke = strokes[p]
        spaint = _hex(stroke[:3]) if style.stroke_paint is None else f"url(#g{style.stroke_paint})"
        out.append(f'<path d="{" ".join(d_of[p])}" {fill} stroke="{spaint}" '
                   f'stroke-opacity="{_opacity(stroke[3])}" stroke-width="{_num(widths[p])}" '
                   f'{_stroke_style(style, dash_offsets[p])}/>')
        while open_groups and open_groups[-1][0][1] == p + 1:
            out.append(open_groups.pop()[1])
    out.append("</svg>")
    return "\n".join(out) + "\n"
