"""SVG in: `from_svg`, following SVG 1.1 (https://www.w3.org/TR/SVG11/); the writer is `svg_write`.

`from_svg` reads untrusted input defensively: `defusedxml` refuses DTDs, entity declarations (billion laughs) and
external references; the text size, element count, nesting depth, path commands and coordinate magnitudes are
capped; elements that would fetch anything (`<image>`, `<use>`, any non-local `href`) are refused. It reads
`path` (M L H V C S Q T A Z, absolute and relative), `line`, `polyline`, `polygon`, `rect`, `circle`,
`ellipse`, inherited presentation attributes and `style` declarations, and affine `transform`s. Each subpath
becomes one scene path (so holes cut by a second subpath are filled rather than cut). Gradients, text, images,
clips, masks and markers are refused with a `ValueError`.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from .scene import MAX_CANVAS, Path, Scene

MAX_SVG_CHARS = 4_000_000  # ~4 MB of markup: far more than a drawing needs, little enough to parse in a second
MAX_ELEMENTS = 20_000
MAX_DEPTH = 64
MAX_COMMANDS = 100_000  # path commands summed over the document
MAX_PATHS = 10_000
MAX_COORD = 1e6  # |coordinate| in user units; beyond this float32 rasterisation loses sub-pixel precision

_SVG_NS = "{http://www.w3.org/2000/svg}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_SKIP = {"defs", "title", "desc", "metadata", "style", "symbol", "namedview", "sodipodi:namedview"}
_REFUSE = {"text", "image", "use", "foreignObject", "clipPath", "mask", "pattern", "marker", "linearGradient",
           "radialGradient", "filter", "script", "switch", "a"}
_INHERITED = ("fill", "stroke", "stroke-width", "fill-opacity", "stroke-opacity", "fill-rule", "visibility")
_NAMED = {  # CSS basic colours plus a few common extended ones
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "lime": (0, 255, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "cyan": (0, 255, 255), "aqua": (0, 255, 255), "magenta": (255, 0, 255),
    "fuchsia": (255, 0, 255), "silver": (192, 192, 192), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "maroon": (128, 0, 0), "olive": (128, 128, 0), "green": (0, 128, 0), "purple": (128, 0, 128),
    "teal": (0, 128, 128), "navy": (0, 0, 128), "orange": (255, 165, 0), "brown": (165, 42, 42),
    "pink": (255, 192, 203), "gold": (255, 215, 0), "darkgray": (169, 169, 169), "darkgrey": (169, 169, 169),
    "lightgray": (211, 211, 211), "lightgrey": (211, 211, 211), "darkblue": (0, 0, 139), "darkred": (139, 0, 0),
    "darkgreen": (0, 100, 0), "indigo": (75, 0, 130), "violet": (238, 130, 238), "beige": (245, 245, 220),
    "skyblue": (135, 206, 235), "tan": (210, 180, 140), "salmon": (250, 128, 114), "coral": (255, 127, 80),
}
_KAPPA = 0.5522847498307936  # 4/3 (sqrt(2) - 1): cubic control distance for a quarter circle


# No two parts of a pattern may match the same characters: user text must never make a regex backtrack
# quadratically (a 20k-digit `width` once froze the server for 21 s). Each pattern below runs in linear time.
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"([MmLlHhVvCcSsQqTtAaZz])|({_NUMBER})|([\s,]+)|(.)")
_ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"SVG {what} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(v) or abs(v) > MAX_COORD:
        raise ValueError(f"SVG {what} must be finite with magnitude <= {MAX_COORD:g}, got {text[:40]!r}")
    return v


def _length(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    m = re.fullmatch(rf"({_NUMBER})\s*(px)?", text.strip())
    if not m:
        raise ValueError(f"SVG {what} must be a number of pixels, got {text[:40]!r}")
    return _float(m.group(1), what)


def _colour(text: str, what: str) -> tuple[float, float, float] | None:
    t = text.strip().lower()
    if t in ("none", "transparent"):
        return None
    if t == "currentcolor":
        return (0.0, 0.0, 0.0)
    if t in _NAMED:
        return tuple(c / 255 for c in _NAMED[t])  # type: ignore[return-value]
    m = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", t)
    if m:
        h = m.group(1)
        h = "".join(c * 2 for c in h) if len(h) == 3 else h
        return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]
    m = re.fullmatch(r"rgba?\(([^)]*)\)", t)
    if m:
        parts = [s for s in re.split(r"[\s,/]+", m.group(1)) if s]
        if len(parts) in (3, 4):
            vals = [(_float(s[:-1], what) / 100 if s.endswith("%") else _float(s, what) / 255) for s in parts[:3]]
            return tuple(min(max(v, 0.0), 1.0) for v in vals)  # type: ignore[return-value]
    raise ValueError(f"SVG {what} colour {text[:60]!r} is not supported (use none, a name, #rgb, #rrggbb or rgb())")


_TRANSFORM_ITEM = re.compile(r"[\s,]*([a-zA-Z]+)\s*\(([^)]*)\)")


def _transform_items(text: str) -> list[tuple[str, str]]:
    """(name, arguments) of each `name(args)` in a transform list, scanned left to right; anything else in the
    text is refused rather than skipped (and so never searched again from every position)."""
    items, pos, end = [], 0, len(text.rstrip(" \t\r\n,"))
    while pos < end:
        m = _TRANSFORM_ITEM.match(text, pos)
        if m is None:
            raise ValueError(f"SVG transform {text[:60]!r} is not a list of name(arguments)")
        items.append((m.group(1), m.group(2)))
        pos = m.end()
    return items


def _parse_transform(text: str) -> tuple[float, ...]:
    m_total = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    for name, args in _transform_items(text):
        v = [_float(s, "transform argument") for s in re.split(r"[\s,]+", args.strip()) if s]
        if name == "matrix" and len(v) == 6:
            m = tuple(v)
        elif name == "translate" and len(v) in (1, 2):
            m = (1, 0, 0, 1, v[0], v[1] if len(v) == 2 else 0.0)
        elif name == "scale" and len(v) in (1, 2):
            m = (v[0], 0, 0, v[1] if len(v) == 2 else v[0], 0, 0)
        elif name == "rotate" and len(v) in (1, 3):
            c, s = math.cos(math.radians(v[0])), math.sin(math.radians(v[0]))
            cx, cy = (v[1], v[2]) if len(v) == 3 else (0.0, 0.0)
            m = (c, s, -s, c, cx - c * cx + s * cy, cy - s * cx - c * cy)
        elif name == "skewX" and len(v) == 1:
            m = (1, 0, math.tan(math.radians(v[0])), 1, 0, 0)
        elif name == "skewY" and len(v) == 1:
            m = (1, math.tan(math.radians(v[0])), 0, 1, 0, 0)
        else:
            raise ValueError(f"SVG transform {name}({args.strip()[:40]}) is not supported")
        m_total = _compose(m_total, m)  # type: ignore[arg-type]
    return m_total


def _compose(m1: tuple[float, ...], m2: tuple[float, ...]) -> tuple[float, ...]:
    """m1 * m2 (m2 applied first), matrices as SVG's (a, b, c, d, e, f)."""
    a1, b1, c1, d1, e1, f1 = m1
    a2, b2, c2, d2, e2, f2 = m2
    return (a1 * a2 + c1 * b2, b1 * a2 + d1 * b2, a1 * c2 + c1 * d2, b1 * c2 + d1 * d2,
            a1 * e2 + c1 * f2 + e1, b1 * e2 + d1 * f2 + f1)


def _arc_to_cubics(x1, y1, rx, ry, phi_deg, large, sweep, x2, y2) -> list[list[tuple[float, float]]]:
    """Endpoint arc -> cubic segments (SVG 1.1 implementation notes F.6.5, one cubic per <= 90 degrees)."""
    if rx == 0 or ry == 0 or (x1 == x2 and y1 == y2):
        return [[(x1, y1), (x1 + (x2 - x1) / 3, y1 + (y2 - y1) / 3), (x1 + 2 * (x2 - x1) / 3, y1 + 2 * (y2 - y1) / 3),
                 (x2, y2)]] if (x1, y1) != (x2, y2) else []
    rx, ry = abs(rx), abs(ry)
    phi = math.radians(phi_deg)
    cp, sp = math.cos(phi), math.sin(phi)
    dx, dy = (x1 - x2) / 2, (y1 - y2) / 2
    xp, yp = cp * dx + sp * dy, -sp * dx + cp * dy
    lam = xp * xp / (rx * rx) + yp * yp / (ry * ry)
    if lam > 1:
        rx, ry = rx * math.sqrt(lam), ry * math.sqrt(lam)
    num = rx * rx * ry * ry - rx * rx * yp * yp - ry * ry * xp * xp
    den = rx * rx * yp * yp + ry * ry * xp * xp
    coef = math.sqrt(max(num, 0.0) / den) if den else 0.0
    if large == sweep:
        coef = -coef
    cxp, cyp = coef * rx * yp / ry, -coef * ry * xp / rx
    cx, cy = cp * cxp - sp * cyp + (x1 + x2) / 2, sp * cxp + cp * cyp + (y1 + y2) / 2

    def angle(ux, uy, vx, vy):
        return math.atan2(ux * vy - uy * vx, ux * vx + uy * vy)

    t1 = angle(1, 0, (xp - cxp) / rx, (yp - cyp) / ry)
    dt = angle((xp - cxp) / rx, (yp - cyp) / ry, (-xp - cxp) / rx, (-yp - cyp) / ry)
    if not sweep and dt > 0:
        dt -= 2 * math.pi
    elif sweep and dt < 0:
        dt += 2 * math.pi
    n = max(1, math.ceil(abs(dt) / (math.pi / 2) - 1e-9))
    step = dt / n
    k = 4 / 3 * math.tan(step / 4)

    def pt(t, scale=1.0, deriv=False):
        ex, ey = (-math.sin(t), math.cos(t)) if deriv else (math.cos(t), math.sin(t))
        ex, ey = rx * ex * scale, ry * ey * scale
        return (cp * ex - sp * ey + (0 if deriv else cx), sp * ex + cp * ey + (0 if deriv else cy))

    out = []
    for i in range(n):
        a, b = t1 + i * step, t1 + (i + 1) * step
        p0, p3 = pt(a), pt(b)
        d0, d3 = pt(a, k, True), pt(b, k, True)
        out.append([p0, (p0[0] + d0[0], p0[1] + d0[1]), (p3[0] - d3[0], p3[1] - d3[1]), p3])
    out[-1][3] = (x2, y2)
    out[0][0] = (x1, y1)
    return out


class _Budget:
    def __init__(self) -> None:
        self.commands = 0

    def spend(self, n: int) -> None:
        self.commands += n
        if self.commands > MAX_COMMANDS:
            raise ValueError(f"SVG has more than {MAX_COMMANDS} path commands; refusing to read it")


def _subpaths(d: str, budget: _Budget) -> Iterator[tuple[list[tuple[float, float]], bool]]:
    """Parse path data into subpaths: (cubic control points in the `Scene` layout, closed)."""
    tokens: list[str | float] = []
    for match in _TOKEN.finditer(d):  # lazily, so oversized data is refused before it is all tokenised
        cmd, num, _space, bad = match.groups()
        if bad:
            raise ValueError(f"SVG path data has an unexpected character {bad!r}")
        if cmd:
            budget.spend(1)
            tokens.append(cmd)
        elif num:
            tokens.append(_float(num, "path coordinate"))
            if len(tokens) > 8 * MAX_COMMANDS:  # implicit repeats: numbers without command letters
                raise ValueError(f"SVG path data has more than {8 * MAX_COMMANDS} numbers; refusing to read it")
    i, cur, start = 0, (0.0, 0.0), (0.0, 0.0)
    pts: list[tuple[float, float]] = []
    last_ctrl, last_cmd = None, ""
    cmd = ""

    def flush(closed: bool):
        nonlocal pts
        out = None
        if len(pts) >= 4:
            q = pts
            if closed:
                if math.dist(q[-1], q[0]) > 1e-9:  # close with a straight line
                    q = q + [_lerp(q[-1], q[0], 1 / 3), _lerp(q[-1], q[0], 2 / 3), q[0]]
                q = q[:-1]
            out = (q, closed)
        pts = []
        return out

    while i < len(tokens):
        tok = tokens[i]
        if isinstance(tok, str):
            cmd = tok
            i += 1
            if cmd in "Zz":
                sp = flush(True)
                if sp:
                    yield sp
                cur, last_ctrl, last_cmd = start, None, "Z"
                continue
        elif not cmd or cmd in "Zz":
            raise ValueError("SVG path data must start with a command (M), got a number")
        n = _ARITY[cmd.upper()]
        args = tokens[i:i + n]
        if len(args) < n or any(isinstance(a, str) for a in args):
            raise ValueError(f"SVG path command {cmd!r} needs {n} numbers")
        i += n
        rel = cmd.islower()
        ox, oy = cur if rel else (0.0, 0.0)
        up = cmd.upper()
        if up == "M":
            sp = flush(False)
            if sp:
                yield sp
            cur = start = (args[0] + ox, args[1] + oy)
            pts = [cur]
            cmd = "l" if rel else "L"  # implicit lineto after moveto
            last_ctrl, last_cmd = None, "M"
            continue
        if not pts:
            pts = [cur]
            start = cur
        budget.spend(1)
        if up in "LHV":
            if up == "L":
                end = (args[0] + ox, args[1] + oy)
            elif up == "H":
                end = (args[0] + (cur[0] if rel else 0.0), cur[1])
            else:
                end = (cur[0], args[0] + (cur[1] if rel else 0.0))
            pts += [_lerp(cur, end, 1 / 3), _lerp(cur, end, 2 / 3), end]
            last_ctrl = None
        elif up in "CS":
            if up == "C":
                c1 = (args[0] + ox, args[1] + oy)
                rest = args[2:]
            else:
                c1 = (2 * cur[0] - last_ctrl[0], 2 * cur[1] - last_ctrl[1]) if last_cmd in "CS" and last_ctrl else cur
                rest = args
            c2 = (rest[0] + ox, rest[1] + oy)
            end = (rest[2] + ox, rest[3] + oy)
            pts += [c1, c2, end]
            last_ctrl = c2
        elif up in "QT":
            if up == "Q":
                q1 = (args[0] + ox, args[1] + oy)
                end = (args[2] + ox, args[3] + oy)
            else:
                q1 = (2 * cur[0] - last_ctrl[0], 2 * cur[1] - last_ctrl[1]) if last_cmd in "QT" and last_ctrl else cur
                end = (args[0] + ox, args[1] + oy)
            pts += [_lerp(cur, q1, 2 / 3), _lerp(end, q1, 2 / 3), end]
            last_ctrl = q1
        else:  # A
            end = (args[5] + ox, args[6] + oy)
            arcs = _arc_to_cubics(cur[0], cur[1], args[0], args[1], args[2], bool(args[3]), bool(args[4]), *end)
            budget.spend(len(arcs))
            for seg in arcs:
                pts += list(seg[1:])
            last_ctrl = None
        cur, last_cmd = end, up
    sp = flush(False)
    if sp:
        yield sp


def _lerp(a, b, t):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _shape_data(tag: str, el) -> str | None:
    """Basic shapes as path data (SVG 1.1 ch. 9 equivalences)."""
    g = lambda k, default=None: _length(el.get(k, default), f"<{tag}> {k}")  # noqa: E731
    if tag == "line":
        return f"M {g('x1', '0')} {g('y1', '0')} L {g('x2', '0')} {g('y2', '0')}"
    if tag in ("polyline", "polygon"):
        nums = re.findall(_NUMBER, el.get("points", ""))
        if len(nums) < 4:
            return None
        d = "M " + " ".join(nums[:2]) + " L " + " ".join(nums[2:])
        return d + (" Z" if tag == "polygon" else "")
    if tag == "rect":
        x, y, w, h = g("x", "0"), g("y", "0"), g("width", "0"), g("height", "0")
        if w <= 0 or h <= 0:
            return None
        rx, ry = el.get("rx"), el.get("ry")
        rx = _length(rx, "<rect> rx") if rx is not None else None
        ry = _length(ry, "<rect> ry") if ry is not None else None
        rx, ry = (rx if rx is not None else ry or 0.0), (ry if ry is not None else rx or 0.0)
        rx, ry = min(rx, w / 2), min(ry, h / 2)
        if rx <= 0 or ry <= 0:
            return f"M {x} {y} H {x + w} V {y + h} H {x} Z"
        return (f"M {x + rx} {y} H {x + w - rx} A {rx} {ry} 0 0 1 {x + w} {y + ry} V {y + h - ry} "
                f"A {rx} {ry} 0 0 1 {x + w - rx} {y + h} H {x + rx} A {rx} {ry} 0 0 1 {x} {y + h - ry} "
                f"V {y + ry} A {rx} {ry} 0 0 1 {x + rx} {y} Z")
    if tag in ("circle", "ellipse"):
        cx, cy = g("cx", "0"), g("cy", "0")
        rx = g("r", "0") if tag == "circle" else g("rx", "0")
        ry = rx if tag == "circle" else g("ry", "0")
        if rx <= 0 or ry <= 0:
            return None
        kx, ky = rx * _KAPPA, ry * _KAPPA
        return (f"M {cx + rx} {cy} C {cx + rx} {cy + ky} {cx + kx} {cy + ry} {cx} {cy + ry} "
                f"C {cx - kx} {cy + ry} {cx - rx} {cy + ky} {cx - rx} {cy} "
                f"C {cx - rx} {cy - ky} {cx - kx} {cy - ry} {cx} {cy - ry} "
                f"C {cx + kx} {cy - ry} {cx + rx} {cy - ky} {cx + rx} {cy} Z")
    return None


def _style(el, parent: dict) -> dict:
    """Presentation attributes and `style` declarations of `el` over those it inherits; opacity multiplies down."""
    style = {k: v for k, v in parent.items() if k in _INHERITED}
    own = {k: el.get(k) for k in _INHERITED + ("opacity", "display") if el.get(k) is not None}
    for decl in (el.get("style") or "").split(";"):
        if ":" in decl:
            k, v = (x.strip() for x in decl.split(":", 1))
            if k in _INHERITED or k in ("opacity", "display"):
                own[k] = v
    opacity = own.pop("opacity", None)
    style.update(own)
    style["opacity"] = parent.get("opacity", 1.0) * (_float(opacity, "opacity") if opacity is not None else 1.0)
    return style


def _local(tag: str) -> str:
    return tag[len(_SVG_NS):] if tag.startswith(_SVG_NS) else tag.split("}")[-1]


def from_svg(text: str, device=None, dtype=None) -> Scene:
    """Read an SVG document into a one-scene batch (see the module docstring for what is supported).

    Coordinates are mapped to the canvas given by `width`/`height` (or the `viewBox` size); a full-canvas
    `<rect id="background">` (as `to_svg` writes) becomes the scene background, otherwise it is transparent.
    Raises `ValueError` for unsafe, oversized or unsupported input.
    """
    import torch

    if not isinstance(text, (str, bytes)):
        raise ValueError(f"`text` must be SVG markup (str), got {type(text).__name__}")
    if len(text) > MAX_SVG_CHARS:
        raise ValueError(f"SVG is {len(text)} characters; the limit is {MAX_SVG_CHARS}")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise ValueError(f"SVG refused: it declares a DTD, entities or external references ({type(err).__name__})") \
            from None
    except SafeET.ParseError as err:
        raise ValueError(f"SVG could not be parsed: {err}") from None
    if _local(root.tag) != "svg":
        raise ValueError(f"SVG root element must be <svg>, got <{_local(root.tag)}>")
    n_el = 0
    for el in root.iter():
        n_el += 1
        if n_el > MAX_ELEMENTS:
            raise ValueError(f"SVG has more than {MAX_ELEMENTS} elements; refusing to read it")
        for key in ("href", _XLINK_HREF):
            ref = el.get(key)
            if ref is not None and not ref.strip().startswith("#"):
                raise ValueError(f"SVG refused: external reference {ref[:60]!r} in <{_local(el.tag)}>")

    # canvas: width/height, else the viewBox size; the viewBox maps onto it with xMidYMid meet
    vb = root.get("viewBox")
    vbox = None
    if vb is not None:
        vals = [_float(s, "viewBox") for s in re.split(r"[\s,]+", vb.strip()) if s]
        if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
            raise ValueError(f"SVG viewBox must be 4 numbers with positive size, got {vb[:60]!r}")
        vbox = vals
    wv, hv = (root.get("width"), root.get("height"))
    wv = None if wv is None or wv.strip().endswith("%") else _length(wv, "width")
    hv = None if hv is None or hv.strip().endswith("%") else _length(hv, "height")
    if wv is None and vbox is not None:
        wv = vbox[2] if hv is None else hv * vbox[2] / vbox[3]
    if hv is None and vbox is not None:
        hv = vbox[3] if wv is None else wv * vbox[3] / vbox[2]
    if wv is None or hv is None:
        raise ValueError("SVG must give width and height or a viewBox")
    width, height = round(wv), round(hv)
    if not (1 <= width <= MAX_CANVAS and 1 <= height <= MAX_CANVAS):
        raise ValueError(f"SVG canvas must be between 1 and {MAX_CANVAS} pixels per side, got {wv:g} x {hv:g}")
    base = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    if vbox is not None:
        s = min(width / vbox[2], height / vbox[3])
        base = (s, 0.0, 0.0, s, -vbox[0] * s + (width - vbox[2] * s) / 2, -vbox[1] * s + (height - vbox[3] * s) / 2)

    paths: list[Path] = []
    rules: set[str] = set()
    background = None
    budget = _Budget()

    def walk(el, style: dict, matrix: tuple[float, ...], depth: int) -> None:
        nonlocal background
        if depth > MAX_DEPTH:
            raise ValueError(f"SVG nests elements deeper than {MAX_DEPTH} levels; refusing to read it")
        tag = _local(el.tag)
        if tag in _SKIP or not isinstance(el.tag, str):
            return
        if tag in _REFUSE:
            raise ValueError(f"SVG element <{tag}> is not supported (only paths and basic shapes are)")
        st = _style(el, style)
        if st.get("display") == "none":
            return
        if el.get("transform"):
            matrix = _compose(matrix, _parse_transform(el.get("transform")))
        if tag in ("svg", "g"):
            for child in el:
                walk(child, st, matrix, depth + 1)
            return
        d = el.get("d") if tag == "path" else _shape_data(tag, el)
        if d is None or st.get("visibility") in ("hidden", "collapse"):
            return
        fill = _colour(st.get("fill", "black"), "fill")
        stroke = _colour(st.get("stroke", "none"), "stroke")
        op = st["opacity"]
        fill_a = _float(st.get("fill-opacity", "1"), "fill-opacity") * op
        stroke_a = _float(st.get("stroke-opacity", "1"), "stroke-opacity") * op
        sw = _length(st.get("stroke-width", "1"), "stroke-width") * math.sqrt(abs(matrix[0] * matrix[3]
                                                                                   - matrix[1] * matrix[2]))
        if (tag == "rect" and el.get("id") == "background" and stroke is None and fill is not None
                and depth == 1 and _is_canvas_rect(el, width, height, matrix)):
            background = (*fill, fill_a)
            return
        for pts, closed in _subpaths(d, budget):
            if len(paths) >= MAX_PATHS:
                raise ValueError(f"SVG has more than {MAX_PATHS} paths; refusing to read it")
            a, b, c, dd, e, f = matrix
            q = [(a * x + c * y + e, b * x + dd * y + f) for x, y in pts]
            if any(not math.isfinite(v) or abs(v) > MAX_COORD for xy in q for v in xy):
                raise ValueError(f"SVG coordinates must stay within +-{MAX_COORD:g} pixels after transforms")
            if fill is not None:
                rules.add(st.get("fill-rule", "nonzero").strip())
            paths.append(Path(q, degrees=3, closed=closed, stroke_width=sw,
                              stroke=(*(stroke or (0.0, 0.0, 0.0)), stroke_a if stroke is not None else 0.0),
                              fill=None if fill is None else (*fill, fill_a)))

    walk(root, {"opacity": 1.0}, base, 0)
    if not paths:
        raise ValueError("SVG contains no paths or shapes to draw")
    rule = "evenodd" if rules == {"evenodd"} else "nonzero"
    return Scene.from_paths(paths, width=width, height=height, background=background, fill_rule=rule,
                            device=device, dtype=dtype or torch.float32)


def _is_canvas_rect(el, width: int, height: int, matrix: tuple[float, ...]) -> bool:
    vals = [_length(el.get(k, "0"), f"<rect> {k}") for k in ("x", "y", "width", "height")]
    a, b, c, d, e, f = matrix
    x0, y0 = a * vals[0] + c * vals[1] + e, b * vals[0] + d * vals[1] + f
    return b == 0 and c == 0 and abs(x0) < 0.5 and abs(y0) < 0.5 and abs(a * vals[2] - width) < 0.5 \
        and abs(d * vals[3] - height) < 0.5
