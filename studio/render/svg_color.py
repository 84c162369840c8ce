"""CSS colours as SVG 2 takes them (CSS Color 4: https://www.w3.org/TR/css-color-4/), parsed in linear time.

`parse_color` reads `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, the 148 named colours (SVG 1.1's 147 and
`rebeccapurple`), `transparent`, `currentColor` (given the element's `color`), `rgb()`/`rgba()` with numbers or
percentages in the comma form and the space form with `/ alpha` (`rgb(0 127 0 / 50%)`), and
`hsl()`/`hsla()` (hue in deg, rad, grad or turn). Results are straight RGBA in [0, 1]; out-of-range channels
are clamped as CSS says. No regular expression here can backtrack: every pattern is anchored and its parts
cannot match the same characters.
"""

from __future__ import annotations

import math
import re

RGBA = tuple[float, float, float, float]
MAX_COLOUR_CHARS = 200  # longer colour text is refused before it is looked at

NAMED = {  # CSS Color 4 named colours (sRGB, 0xRRGGBB)
    "aliceblue": 0xf0f8ff, "antiquewhite": 0xfaebd7, "aqua": 0x00ffff, "aquamarine": 0x7fffd4, "azure": 0xf0ffff,
    "beige": 0xf5f5dc, "bisque": 0xffe4c4, "black": 0x000000, "blanchedalmond": 0xffebcd, "blue": 0x0000ff,
    "blueviolet": 0x8a2be2, "brown": 0xa52a2a, "burlywood": 0xdeb887, "cadetblue": 0x5f9ea0,
    "chartreuse": 0x7fff00, "chocolate": 0xd2691e, "coral": 0xff7f50, "cornflowerblue": 0x6495ed,
    "cornsilk": 0xfff8dc, "crimson": 0xdc143c, "cyan": 0x00ffff, "darkblue": 0x00008b, "darkcyan": 0x008b8b,
    "darkgoldenrod": 0xb8860b, "darkgray": 0xa9a9a9, "darkgreen": 0x006400, "darkgrey": 0xa9a9a9,
    "darkkhaki": 0xbdb76b, "darkmagenta": 0x8b008b, "darkolivegreen": 0x556b2f, "darkorange": 0xff8c00,
    "darkorchid": 0x9932cc, "darkred": 0x8b0000, "darksalmon": 0xe9967a, "darkseagreen": 0x8fbc8f,
    "darkslateblue": 0x483d8b, "darkslategray": 0x2f4f4f, "darkslategrey": 0x2f4f4f, "darkturquoise": 0x00ced1,
    "darkviolet": 0x9400d3, "deeppink": 0xff1493, "deepskyblue": 0x00bfff, "dimgray": 0x696969,
    "dimgrey": 0x696969, "dodgerblue": 0x1e90ff, "firebrick": 0xb22222, "floralwhite": 0xfffaf0,
    "forestgreen": 0x228b22, "fuchsia": 0xff00ff, "gainsboro": 0xdcdcdc, "ghostwhite": 0xf8f8ff, "gold": 0xffd700,
    "goldenrod": 0xdaa520, "gray": 0x808080, "green": 0x008000, "greenyellow": 0xadff2f, "grey": 0x808080,
    "honeydew": 0xf0fff0, "hotpink": 0xff69b4, "indianred": 0xcd5c5c, "indigo": 0x4b0082, "ivory": 0xfffff0,
    "khaki": 0xf0e68c, "lavender": 0xe6e6fa, "lavenderblush": 0xfff0f5, "lawngreen": 0x7cfc00,
    "lemonchiffon": 0xfffacd, "lightblue": 0xadd8e6, "lightcoral": 0xf08080, "lightcyan": 0xe0ffff,
    "lightgoldenrodyellow": 0xfafad2, "lightgray": 0xd3d3d3, "lightgreen": 0x90ee90, "lightgrey": 0xd3d3d3,
    "lightpink": 0xffb6c1, "lightsalmon": 0xffa07a, "lightseagreen": 0x20b2aa, "lightskyblue": 0x87cefa,
    "lightslategray": 0x778899, "lightslategrey": 0x778899, "lightsteelblue": 0xb0c4de, "lightyellow": 0xffffe0,
    "lime": 0x00ff00, "limegreen": 0x32cd32, "linen": 0xfaf0e6, "magenta": 0xff00ff, "maroon": 0x800000,
    "mediumaquamarine": 0x66cdaa, "mediumblue": 0x0000cd, "mediumorchid": 0xba55d3, "mediumpurple": 0x9370db,
    "mediumseagreen": 0x3cb371, "mediumslateblue": 0x7b68ee, "mediumspringgreen": 0x00fa9a,
    "mediumturquoise": 0x48d1cc, "mediumvioletred": 0xc71585, "midnightblue": 0x191970, "mintcream": 0xf5fffa,
    "mistyrose": 0xffe4e1, "moccasin": 0xffe4b5, "navajowhite": 0xffdead, "navy": 0x000080, "oldlace": 0xfdf5e6,
    "olive": 0x808000, "olivedrab": 0x6b8e23, "orange": 0xffa500, "orangered": 0xff4500, "orchid": 0xda70d6,
    "palegoldenrod": 0xeee8aa, "palegreen": 0x98fb98, "paleturquoise": 0xafeeee, "palevioletred": 0xdb7093,
    "papayawhip": 0xffefd5, "peachpuff": 0xffdab9, "peru": 0xcd853f, "pink": 0xffc0cb, "plum": 0xdda0dd,
    "powderblue": 0xb0e0e6, "purple": 0x800080, "rebeccapurple": 0x663399, "red": 0xff0000, "rosybrown": 0xbc8f8f,
    "royalblue": 0x4169e1, "saddlebrown": 0x8b4513, "salmon": 0xfa8072, "sandybrown": 0xf4a460,
    "seagreen": 0x2e8b57, "seashell": 0xfff5ee, "sienna": 0xa0522d, "silver": 0xc0c0c0, "skyblue": 0x87ceeb,
    "slateblue": 0x6a5acd, "slategray": 0x708090, "slategrey": 0x708090, "snow": 0xfffafa, "springgreen": 0x00ff7f,
    "steelblue": 0x4682b4, "tan": 0xd2b48c, "teal": 0x008080, "thistle": 0xd8bfd8, "tomato": 0xff6347,
    "turquoise": 0x40e0d0, "violet": 0xee82ee, "wheat": 0xf5deb3, "white": 0xffffff, "whitesmoke": 0xf5f5f5,
    "yellow": 0xffff00, "yellowgreen": 0x9acd32,
}

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_HEX = re.compile(r"#([0-9a-f]+)")
_ANGLE_UNITS = {"": 1.0, "deg": 1.0, "grad": 0.9, "rad": 180 / math.pi, "turn": 360.0}


def _bad(text: str, what: str, why: str = "") -> ValueError:
    return ValueError(f"SVG {what} colour {text[:60]!r} is not a CSS colour{why} (use none, a name, #rgb, "
                      "#rrggbb(aa), rgb()/rgba(), hsl()/hsla(), transparent or currentColor)")


def _num(s: str, text: str, what: str) -> float:
    if _NUMBER.fullmatch(s) is None:
        raise _bad(text, what)
    v = float(s)
    if not math.isfinite(v):
        raise _bad(text, what)
    return v


def _component(s: str, scale: float, text: str, what: str) -> float:
    """A channel: a number in [0, scale] or a percentage, as a fraction in [0, 1]."""
    if s.endswith("%"):
        v = _num(s[:-1], text, what) / 100
    else:
        v = _num(s, text, what) / scale
    return min(max(v, 0.0), 1.0)


def _hue(s: str, text: str, what: str) -> float:
    i = len(s)
    while i > 0 and s[i - 1].isalpha():
        i -= 1
    unit = s[i:]
    if unit not in _ANGLE_UNITS:
        raise _bad(text, what, f" (hue unit {unit!r})")
    return _num(s[:i], text, what) * _ANGLE_UNITS[unit] % 360


def _hsl_to_rgb(h: float, s: float, lum: float) -> tuple[float, float, float]:
    """CSS Color 4 section 7.1 (the sample code's hslToRgb)."""
    def f(n: float) -> float:
        k = (n + h / 30) % 12
        a = s * min(lum, 1 - lum)
        return lum - a * max(-1.0, min(k - 3, 9 - k, 1.0))
    return f(0), f(8), f(4)


def _functional(t: str, text: str, what: str) -> RGBA:
    name, _, rest = t.partition("(")
    name = name.strip()
    if name not in ("rgb", "rgba", "hsl", "hsla") or not rest.endswith(")"):
        raise _bad(text, what)
    inner = rest[:-1]
    if "(" in inner or ")" in inner:
        raise _bad(text, what)
    if "," in inner:  # legacy form: 3 or 4 comma-separated values
        parts = [p.strip() for p in inner.split(",")]
        if len(parts) not in (3, 4):
            raise _bad(text, what)
        alpha = parts[3] if len(parts) == 4 else None
        parts = parts[:3]
        if len(parts) != 3 or "/" in inner:
            raise _bad(text, what)
    else:  # modern form: 3 space-separated values, then optionally "/ alpha"
        body, slash, alpha_text = inner.partition("/")
        parts = body.split()
        alpha = alpha_text.strip() if slash else None
        if slash and (not alpha or len(alpha.split()) != 1):
            raise _bad(text, what)
    if len(parts) != 3 or any(not p for p in parts) or alpha == "":
        raise _bad(text, what)
    a = 1.0 if alpha is None else _component(alpha, 1.0, text, what)
    if name.startswith("rgb"):
        r, g, b = (_component(p, 255.0, text, what) for p in parts)
        return (r, g, b, a)
    h = _hue(parts[0], text, what)
    s, lum = (_component(p, 100.0, text, what) if not p.endswith("%") else _component(p, 1.0, text, what)
              for p in parts[1:])
    return (*_hsl_to_rgb(h, s, lum), a)


def parse_color(text: str, what: str, current: RGBA | None = None) -> RGBA:
    """A CSS `<color>` as straight RGBA in [0, 1]; `current` is the element's `color` (for currentColor).

    `what` names the property for error messages. Raises `ValueError` for anything else (including `none`,
    which is a paint, not a colour: see `svg_read`).
    """
    if len(text) > MAX_COLOUR_CHARS:
        raise _bad(text, what, f" (longer than {MAX_COLOUR_CHARS} characters)")
    t = text.strip().lower()
    if t == "transparent":
        return (0.0, 0.0, 0.0, 0.0)
    if t == "currentcolor":
        return current if current is not None else (0.0, 0.0, 0.0, 1.0)
    if t in NAMED:
        v = NAMED[t]
        return ((v >> 16) / 255, (v >> 8 & 255) / 255, (v & 255) / 255, 1.0)
    m = _HEX.fullmatch(t)
    if m is not None:
        h = m.group(1)
        if len(h) in (3, 4):
            h = "".join(c * 2 for c in h)
        if len(h) not in (6, 8):
            raise _bad(text, what)
        ch = [int(h[i:i + 2], 16) / 255 for i in range(0, len(h), 2)]
        return (ch[0], ch[1], ch[2], ch[3] if len(ch) == 4 else 1.0)
    if "(" in t:
        return _functional(t, text, what)
    raise _bad(text, what)
