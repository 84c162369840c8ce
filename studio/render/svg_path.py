"""SVG path data, numbers and transform lists (SVG 1.1 chapters 7 and 8), parsed in linear time.

`subpaths` turns path data (M L H V C S Q T A Z, absolute and relative) into cubic control points in the
`Scene` layout, one list per subpath; `parse_transform` reads a transform list into an affine matrix.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

MAX_COMMANDS = 100_000  # path commands summed over the document
MAX_COORD = 1e6  # |coordinate| in user units; beyond this float32 rasterisation loses sub-pixel precision

Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)

# No two parts of a pattern may match the same characters: user text must never make a regex backtrack
# quadratically (a 20k-digit `width` once froze the server for 21 s). Each pattern below runs in linear time.
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(NUMBER)
_TOKEN = re.compile(rf"([MmLlHhVvCcSsQqTtAaZz])|({NUMBER})|([\s,]+)|(.)")
_SEPARATORS = re.compile(r"[\s,]*")
_COMMANDS = frozenset("MmLlHhVvCcSsQqTtAaZz")
_ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}


def number(text: str, what: str) -> float:
    """A finite SVG number of bounded magnitude."""
    t = text.strip()
    if NUMBER_RE.fullmatch(t) is None:
        raise ValueError(f"SVG {what} must be a number, got {text[:40]!r}")
    v = float(t)
    if not math.isfinite(v) or abs(v) > MAX_COORD:
        raise ValueError(f"SVG {what} must be finite with magnitude <= {MAX_COORD:g}, got {text[:40]!r}")
    return v


def numbers(text: str, what: str) -> list[float]:
    """A list of numbers separated by commas and/or white space."""
    return [number(s, what) for s in re.split(r"[\s,]+", text.strip()) if s]


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


def parse_transform(text: str) -> Matrix:
    m_total = IDENTITY
    for name, args in _transform_items(text):
        v = numbers(args, "transform argument")
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
        m_total = compose(m_total, m)  # type: ignore[arg-type]
    return m_total


def compose(m1: Matrix, m2: Matrix) -> Matrix:
    """m1 * m2 (m2 applied first), matrices as SVG's (a, b, c, d, e, f)."""
    a1, b1, c1, d1, e1, f1 = m1
    a2, b2, c2, d2, e2, f2 = m2
    return (a1 * a2 + c1 * b2, b1 * a2 + d1 * b2, a1 * c2 + c1 * d2, b1 * c2 + d1 * d2,
            a1 * e2 + c1 * f2 + e1, b1 * e2 + d1 * f2 + f1)


def translate(x: float, y: float) -> Matrix:
    return (1.0, 0.0, 0.0, 1.0, x, y)


def apply(m: Matrix, pts):
    a, b, c, d, e, f = m
    return [(a * x + c * y + e, b * x + d * y + f) for x, y in pts]


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


class Budget:
    def __init__(self) -> None:
        self.commands = 0

    def spend(self, n: int) -> None:
        self.commands += n
        if self.commands > MAX_COMMANDS:
            raise ValueError(f"SVG has more than {MAX_COMMANDS} path commands; refusing to read it")


def subpaths(d: str, budget: Budget) -> Iterator[tuple[list[tuple[float, float]], bool]]:
    """Parse path data into subpaths: (cubic control points in the `Scene` layout, closed)."""
    tokens: list[str | float] = []
    pos, end_text, arc, argi = 0, len(d), False, 0
    while True:  # one token per turn, left to right: linear in the text, and refused at the first bad character
        pos = _SEPARATORS.match(d, pos).end()
        if pos >= end_text:
            break
        if arc and argi % 7 in (3, 4) and d[pos] not in _COMMANDS:
            # a flag is one character (SVG 2 path grammar): svgo writes `a5 5 0 0110 0` for flags 0, 1 then x 10
            if d[pos] not in "01":
                raise ValueError(f"SVG path arc flag must be 0 or 1, got {d[pos:pos + 12]!r}")
            tokens.append(float(d[pos]))
            pos, argi = pos + 1, argi + 1
            continue
        match = _TOKEN.match(d, pos)
        pos = match.end()
        kind = match.lastindex  # 1 command, 2 number, 4 anything else (separators were skipped)
        if kind == 4:
            raise ValueError(f"SVG path data has an unexpected character {match.group(4)!r}")
        if kind == 1:
            budget.spend(1)
            tokens.append(match.group(1))
            arc, argi = match.group(1) in "Aa", 0
        else:  # the pattern already matched a number: only its magnitude is left to check
            num = match.group(2)
            v = float(num)
            if not abs(v) <= MAX_COORD:
                raise ValueError(f"SVG path coordinate must be finite with magnitude <= {MAX_COORD:g}, got "
                                 f"{num[:40]!r}")
            tokens.append(v)
            argi += 1
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
                    q = q + [lerp(q[-1], q[0], 1 / 3), lerp(q[-1], q[0], 2 / 3), q[0]]
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
        if len(args) < n or str in map(type, args):
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
            pts += [lerp(cur, end, 1 / 3), lerp(cur, end, 2 / 3), end]
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
            pts += [lerp(cur, q1, 2 / 3), lerp(end, q1, 2 / 3), end]
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


def lerp(a, b, t):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)




def _cubic_extent(p0: float, p1: float, p2: float, p3: float) -> tuple[float, float]:
    """Exact range of one coordinate of a cubic Bézier over t in [0, 1] (roots of its derivative)."""
    lo, hi = min(p0, p3), max(p0, p3)
    if min(p1, p2) >= lo and max(p1, p2) <= hi:
        return lo, hi
    a, b, c = -p0 + 3 * p1 - 3 * p2 + p3, 2 * (p0 - 2 * p1 + p2), p1 - p0
    roots = []
    if abs(a) < 1e-12:
        if abs(b) > 1e-12:
            roots.append(-c / b)
    else:
        disc = b * b - 4 * a * c
        if disc >= 0:
            r = math.sqrt(disc)
            roots += [(-b + r) / (2 * a), (-b - r) / (2 * a)]
    for t in roots:
        if 0 < t < 1:
            u = 1 - t
            v = u * u * u * p0 + 3 * u * u * t * p1 + 3 * u * t * t * p2 + t * t * t * p3
            lo, hi = min(lo, v), max(hi, v)
    return lo, hi


def bounding_box(subs) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the curves of [(points in the Scene layout, closed)] (exact, not the control hull)."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for pts, closed in subs:
        ring = list(pts) + [pts[0]] if closed else list(pts)
        for k in range(0, len(ring) - 3, 3):
            seg = ring[k:k + 4]
            lo, hi = _cubic_extent(*(p[0] for p in seg))
            x0, x1 = min(x0, lo), max(x1, hi)
            lo, hi = _cubic_extent(*(p[1] for p in seg))
            y0, y1 = min(y0, lo), max(y1, hi)
    return x0, y0, x1, y1
