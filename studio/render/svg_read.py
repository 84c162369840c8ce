"""SVG in: `from_svg`, the static part of SVG 2 (https://www.w3.org/TR/SVG2/) as the specification draws it, or a
`ValueError` that names what it cannot draw. The writer is `svg_write`.

Read: `path` (M L H V C S Q T A Z, absolute and relative; all subpaths of one element are one shape, holes cut by
`fill-rule`), `rect` (with rx/ry), `circle`, `ellipse`, `line`, `polyline`, `polygon`; the containers `g`, `a`,
nested `svg` (x, y, width, height, viewBox, every `preserveAspectRatio`), `switch` (the first child whose
`requiredExtensions` / `systemLanguage` hold; the user language is "en"; `requiredFeatures` is ignored as SVG 2
says), `use` of local elements (`symbol` and `svg` with their viewports, x/y, nested uses; expansion capped);
`<style>` sheets and `style` attributes with the CSS cascade (`svg_css`), inheritance, `inherit` / `initial` /
`unset`; every CSS colour (`svg_color`); `transform` with `transform-origin`; lengths in px, pt, pc, mm, cm, in
and percentages of the viewport; the paint properties fill / stroke (colour, `url(#gradient)` with a fallback,
`none`, currentColor with `color`), fill-opacity, stroke-opacity, opacity, fill-rule, stroke-width,
stroke-linecap, stroke-linejoin (miter, round, bevel), stroke-miterlimit, stroke-dasharray, stroke-dashoffset,
display, visibility; `linearGradient` / `radialGradient` (gradientUnits, gradientTransform, spreadMethod, href
inheritance, stops with stop-color and stop-opacity, fx/fy/fr); `clip-path: url(#id)` of a `<clipPath>` that is one
axis-aligned rectangle on the canvas (any clipPathUnits; a group clip, `_Reader.clip`).

Accepted and ignored, because they do not change how anything drawn here looks: text and font properties
(`IGNORED_PROPERTIES`; text itself is refused), pointer-events, cursor, the filter-, clip- and image-only
properties (flood-*, lighting-color, clip-rule, color-interpolation-filters, image-rendering), hints
(color-rendering, text-rendering), isolation, enable-background, vendor-prefixed properties (`-inkscape-*`), and
non-rendered definitions that nothing references (`clipPath`, `mask`, `pattern`, `marker`, `filter` elements).

Refused by name: text, tspan, textPath, image (an embedded data: raster named as such), foreignObject (outside a
switch that skips it), script, animation elements, any unknown element in the SVG namespace; clip paths other than
one axis-aligned rectangle; properties that would change the drawing unless they keep their initial value: mask,
filter, marker(-start/-mid/-end), mix-blend-mode,
vector-effect, shape-rendering other than auto/geometricPrecision, color-interpolation linearRGB,
transform-box other than view-box, miter-clip / arcs joins; strokes under non-uniform transforms (beyond
`MAX_STROKE_ERROR` pixels of error); content
overflowing a rotated or skewed nested viewport that clips it; more than `MAX_GROUPS` composited layers; `transform`
or geometry properties set in CSS; em/ex units; pattern paints; missing references; unknown properties.

`opacity` below 1 composites the element as one layer (a `Topology.groups` range over the paths it drew: nested
groups, `<use>` of a group, a path with both fill and stroke); on an element that draws a single layer it is
multiplied into that layer's alpha (the same drawing). A nested `<svg>` (or `<symbol>` through `<use>`) whose
overflow clips (the default) and whose content reaches outside its viewport gets a group with the viewport as an
axis-aligned clip rectangle in canvas pixels; content entirely inside needs no clip and gets none.

Untrusted input is read defensively: `defusedxml` refuses entity declarations (billion laughs) and external
references, a DOCTYPE is read only without an internal subset, and any entity reference other than XML's five is
refused; the text size, element count (counting every `<use>` expansion), nesting depth, path commands,
coordinates, style-sheet rules, selector work, gradient stops over all paints and the area of composited layers are
capped, and no href may leave the document.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException, DTDForbidden, EntitiesForbidden

from .scene import MAX_CANVAS, Gradient, Path, Scene, Subpath
from .svg_color import RGBA, parse_color
from .svg_css import Matcher, parse_declarations, parse_stylesheet
from .svg_path import (
    IDENTITY,
    MAX_COMMANDS,
    MAX_COORD,
    NUMBER_RE,
    Budget,
    Matrix,
    apply,
    bounding_box,
    compose,
    lerp,
    number,
    parse_transform,
    subpaths,
    translate,
)

__all__ = ["from_svg", "MAX_SVG_CHARS", "MAX_ELEMENTS", "MAX_DEPTH", "MAX_COMMANDS", "MAX_PATHS", "MAX_COORD",
           "MAX_USE_EXPANSION", "MAX_GROUPS", "MAX_GRADIENT_STOPS", "MAX_GROUP_PIXELS", "MAX_STROKE_ERROR"]

MAX_SVG_CHARS = 4_000_000  # ~4 MB of markup: far more than a drawing needs, little enough to parse in a second
MAX_ELEMENTS = 20_000  # elements in the document, and elements drawn after expanding every <use>
MAX_DEPTH = 64
MAX_PATHS = 10_000
MAX_USE_EXPANSION = 5_000  # <use> instantiations summed over the document (a use-bomb is refused)
MAX_HREF_CHAIN = 16  # gradients inheriting from gradients
MAX_DASHES = 64
MAX_STOPS = 256
MAX_GRADIENT_STOPS = 20_000  # stops over every gradient paint of the document (each is a tensor per shape)
MAX_STROKE_ERROR = 0.1  # px an outline or dash may move when a near-uniform transform is drawn as a similarity
MAX_GROUP_PIXELS = 4_000_000  # layer pixels beyond two canvases' worth, summed over the groups (see _check_layer_area)
MAX_GROUPS = 64  # composited layers (each is a render of its own, ~15-50 ms on this CPU): group opacity, clips

_SVG_NS = "{http://www.w3.org/2000/svg}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"

_SHAPES = {"path", "rect", "circle", "ellipse", "line", "polyline", "polygon"}
_CONTAINERS = {"g", "a", "svg", "switch", "use"}
# never drawn where they stand; referenced ones are read (gradients, symbols) or refused where referenced
_NON_RENDERING = {"defs", "title", "desc", "metadata", "style", "symbol", "linearGradient", "radialGradient", "stop",
                  "clipPath", "mask", "pattern", "marker", "filter", "font", "font-face", "glyph", "missing-glyph",
                  "color-profile", "view", "cursor", "solidcolor", "solidColor", "hatch", "hatchpath"}
_REFUSED = {"text": "text", "tspan": "text", "textPath": "text", "image": "images", "foreignObject": "foreign objects",
            "script": "scripts", "animate": "animation", "animateMotion": "animation", "animateTransform": "animation",
            "animateColor": "animation", "set": "animation", "mpath": "animation", "iframe": "embedded documents",
            "video": "media", "audio": "media", "canvas": "canvas", "discard": "animation", "mesh": "mesh gradients",
            "meshgradient": "mesh gradients"}

# property: (initial value, inherited)
PROPERTIES = {
    "fill": ("black", True), "fill-opacity": ("1", True), "fill-rule": ("nonzero", True),
    "stroke": ("none", True), "stroke-width": ("1", True), "stroke-opacity": ("1", True),
    "stroke-linecap": ("butt", True), "stroke-linejoin": ("miter", True), "stroke-miterlimit": ("4", True),
    "stroke-dasharray": ("none", True), "stroke-dashoffset": ("0", True), "color": ("black", True),
    "visibility": ("visible", True), "opacity": ("1", False), "display": ("inline", False),
    "stop-color": ("black", False), "stop-opacity": ("1", False), "transform-origin": ("0 0", False),
    "overflow": ("visible", False),
    # refused unless they keep one of the values in _DEFAULT_ONLY
    "clip-path": ("none", False), "mask": ("none", False), "filter": ("none", False),
    "marker-start": ("none", True), "marker-mid": ("none", True), "marker-end": ("none", True),
    "marker": ("none", True), "paint-order": ("normal", True), "mix-blend-mode": ("normal", False),
    "vector-effect": ("none", False), "shape-rendering": ("auto", True), "color-interpolation": ("srgb", True),
    "transform-box": ("view-box", False), "clip": ("auto", False),
}
_DEFAULT_ONLY = {
    "mask": ({"none"}, "masks"), "filter": ({"none"}, "filters"),
    "marker-start": ({"none"}, "markers"), "marker-mid": ({"none"}, "markers"),
    "marker-end": ({"none"}, "markers"), "marker": ({"none"}, "markers"),
    "mix-blend-mode": ({"normal"}, "blend modes"), "vector-effect": ({"none"}, "vector effects"),
    "shape-rendering": ({"auto", "geometricprecision"}, "aliased (crisp-edged) drawing"),
    "color-interpolation": ({"auto", "srgb"}, "linearRGB interpolation"),
    "transform-box": ({"view-box"}, "other transform boxes"), "clip": ({"auto"}, "clip rectangles"),
}
_NOT_INHERITED_INITIAL = {k: v for k, (v, inh) in PROPERTIES.items() if not inh}
_INHERITED_INITIAL = {k: v for k, (v, inh) in PROPERTIES.items() if inh}
IGNORED_PROPERTIES = frozenset({
    # text and fonts (text is refused, so these never change a drawn shape)
    "font", "font-family", "font-size", "font-size-adjust", "font-stretch", "font-style", "font-variant",
    "font-weight", "font-feature-settings", "font-kerning", "font-variation-settings", "font-variant-ligatures",
    "font-variant-caps", "font-variant-numeric", "font-variant-east-asian", "font-variant-position",
    "font-synthesis", "font-optical-sizing", "line-height", "text-anchor", "text-decoration", "text-decoration-line",
    "text-decoration-color", "text-decoration-style", "text-align", "text-align-last", "text-indent",
    "text-transform", "text-orientation", "text-overflow", "letter-spacing", "word-spacing", "writing-mode",
    "direction", "unicode-bidi", "dominant-baseline", "alignment-baseline", "baseline-shift", "kerning",
    "glyph-orientation-horizontal", "glyph-orientation-vertical", "white-space", "inline-size", "shape-inside",
    "shape-subtract", "shape-padding", "shape-margin", "text-rendering", "lang",
    # interaction
    "pointer-events", "cursor", "user-select",
    # only for filters, clips, masks, images (all refused where used) or hints
    "flood-color", "flood-opacity", "lighting-color", "color-interpolation-filters", "clip-rule", "mask-type",
    "image-rendering", "color-rendering", "color-profile", "enable-background", "isolation", "solid-color",
    "solid-opacity",
})
_GEOMETRY = {"x", "y", "width", "height", "cx", "cy", "r", "rx", "ry", "d", "x1", "y1", "x2", "y2", "points", "fr",
             "fx", "fy", "transform"}
_UNITS = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0, "q": 96 / 101.6}
_USER_LANGUAGE = "en"
_KAPPA = 0.5522847498307936  # 4/3 (sqrt(2) - 1): cubic control distance for a quarter circle


# ------------------------------------------------------------------------------------------------- small parsers
def _split_unit(text: str) -> tuple[str, str]:
    t = text.strip()
    i = len(t)
    while i > 0 and (t[i - 1].isalpha() or t[i - 1] == "%"):
        i -= 1
    return t[:i], t[i:].lower()


def _length(text: str | None, what: str, ref: float | None = None) -> float | None:
    """A length in user units: a number with px, pt, pc, mm, cm, in or Q, or a percentage of `ref`."""
    if text is None:
        return None
    if len(text) <= _CACHED_CHARS:  # documents repeat their lengths; the cache keeps short texts only
        return _cached_length(text, what, ref)
    return _parse_length(text, what, ref)


_CACHED_CHARS = 64


@functools.lru_cache(maxsize=4096)
def _cached_length(text: str, what: str, ref: float | None) -> float:
    return _parse_length(text, what, ref)


@functools.lru_cache(maxsize=4096)
def _colour(text: str, what: str, current: RGBA | None = None) -> RGBA:
    """`parse_color`, remembered (colour texts are at most `svg_color.MAX_COLOUR_CHARS` long)."""
    return parse_color(text, what, current)


def _parse_length(text: str, what: str, ref: float | None) -> float:
    num, unit = _split_unit(text)
    if NUMBER_RE.fullmatch(num) is None:
        raise ValueError(f"SVG {what} must be a length, got {text[:40]!r}")
    v = number(num, what)
    if unit == "%":
        if ref is None:
            raise ValueError(f"SVG {what} cannot be a percentage, got {text[:40]!r}")
        return v / 100 * ref
    if unit not in _UNITS:
        raise ValueError(f"SVG {what} unit {unit!r} is not supported (use px, pt, pc, mm, cm, in or %), got "
                         f"{text[:40]!r}")
    return v * _UNITS[unit]


def _fraction(text: str, what: str) -> float:
    """An opacity / offset: a number or a percentage, clamped to [0, 1]."""
    t = text.strip()
    v = number(t[:-1], what) / 100 if t.endswith("%") else number(t, what)
    return min(max(v, 0.0), 1.0)


def _local(tag) -> str | None:
    """The SVG element name, or None for elements of other namespaces (not rendered, SVG 2 section 5.11)."""
    if not isinstance(tag, str):
        return None
    if tag.startswith(_SVG_NS):
        return tag[len(_SVG_NS):]
    return None if tag.startswith("{") else tag


def _href(el) -> str | None:
    ref = el.get("href")
    return ref if ref is not None else el.get(_XLINK_HREF)


def _pixel_scale(m: Matrix, what: str, reach: float = 0.0) -> float:
    """The scale of the similarity nearest to `m` (the mean of its two singular values), used for a stroke's width
    and dashes. `reach` is how far, in user units, a length scaled wrongly can move an outline: half the stroke
    width, plus the stroke's length when it is dashed (a dash's place accumulates the error along the path). When
    the difference between the axes' scales moves any outline by more than `MAX_STROKE_ERROR` pixels the
    transform is refused for `what` (a stroke under a non-uniform transform is not a constant-width band)."""
    a, b, c, d = m[:4]
    p, q = (a * a + b * b + c * c + d * d) / 2, abs(a * d - b * c)
    disc = math.sqrt(max(p * p - q * q, 0.0))
    s1, s2 = math.sqrt(p + disc), math.sqrt(max(p - disc, 0.0))
    error = (s1 - s2) / 2 * reach  # px: each direction's scale is within (s1 - s2) / 2 of the mean
    if error > MAX_STROKE_ERROR:
        raise ValueError(f"SVG {what} under a non-uniform transform (scale or skew that differs per axis by "
                         f"{(s1 - s2) / max(s1, 1e-12):.2%}) is not supported: drawn with one width it would be "
                         f"off by up to {error:.2g} px, more than {MAX_STROKE_ERROR} px")
    return (s1 + s2) / 2


def _view_box(text: str | None, what: str) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    vals = [number(s, what) for s in text.replace(",", " ").split()]
    if len(vals) != 4 or vals[2] < 0 or vals[3] < 0:
        raise ValueError(f"SVG {what} must be 4 numbers with non-negative size, got {text[:60]!r}")
    return tuple(vals)  # type: ignore[return-value]


_ALIGNS = {"none"} | {f"x{a}Y{b}" for a in ("Min", "Mid", "Max") for b in ("Min", "Mid", "Max")}


def _aspect(text: str | None) -> tuple[str, bool]:
    """preserveAspectRatio -> (align lower-cased, slice)."""
    parts = (text or "xMidYMid meet").split()
    if parts and parts[0] == "defer":
        parts = parts[1:]
    if not parts or len(parts) > 2 or parts[0] not in _ALIGNS or (len(parts) == 2
                                                                    and parts[1] not in ("meet", "slice")):
        raise ValueError(f"SVG preserveAspectRatio {str(text)[:60]!r} is not `[defer] <align> [meet|slice]`")
    return parts[0].lower(), len(parts) == 2 and parts[1] == "slice"


def viewbox_transform(vbox, x: float, y: float, w: float, h: float, aspect: str | None) -> Matrix:
    """SVG 2 section 8.2: the viewBox onto the viewport (x, y, w, h) with preserveAspectRatio."""
    vx, vy, vw, vh = vbox
    align, slice_ = _aspect(aspect)
    sx, sy = w / vw, h / vh
    if align == "none":
        return (sx, 0.0, 0.0, sy, x - vx * sx, y - vy * sy)
    s = max(sx, sy) if slice_ else min(sx, sy)
    tx, ty = x - vx * s, y - vy * s
    ax, ay = align[1:4], align[5:8]
    tx += {"min": 0.0, "mid": (w - vw * s) / 2, "max": w - vw * s}[ax]
    ty += {"min": 0.0, "mid": (h - vh * s) / 2, "max": h - vh * s}[ay]
    return (s, 0.0, 0.0, s, tx, ty)


def _paint(value: str, what: str) -> tuple[str, str | None, str | None]:
    """('none' | 'color' | 'url', colour text or id, fallback text)."""
    v = value.strip()
    if v.lower() == "none":
        return ("none", None, None)
    if v.lower().startswith("url("):
        close = v.find(")")
        if close < 0:
            raise ValueError(f"SVG {what} {v[:60]!r} has an unclosed url(")
        ref = v[4:close].strip().strip("\"'")
        if not ref.startswith("#"):
            raise ValueError(f"SVG refused: external reference {ref[:60]!r} in {what}")
        return ("url", ref[1:], v[close + 1:].strip() or None)
    return ("color", v, None)


def _stroke_first(text: str, tag: str) -> bool:
    """paint-order (SVG 2 section 13.6): whether the stroke is painted before the fill. Markers are refused
    elsewhere, so their place does not matter."""
    words = text.lower().split()
    if words == ["normal"]:
        return False
    if not words or len(words) > 3 or len(set(words)) != len(words) or any(
            w not in ("fill", "stroke", "markers") for w in words):
        raise ValueError(f"SVG paint-order {text[:60]!r} on <{tag}> is not `normal` or an order of fill, stroke, "
                         "markers")
    order = words + [w for w in ("fill", "stroke", "markers") if w not in words]
    return order.index("stroke") < order.index("fill")


def _check_refs(el, tag: str) -> None:
    for key in ("href", _XLINK_HREF):
        ref = el.get(key)
        if tag == "image" and ref is not None and ref.strip()[:5].lower() == "data:":
            continue  # inside the document, never fetched; refused where it would be drawn (`_refuse_element`)
        if ref is not None and not ref.strip().startswith("#") and tag != "a":
            raise ValueError(f"SVG refused: external reference {ref[:60]!r} in <{tag}>")


# ------------------------------------------------------------------------------------------------- records
@dataclass
class _Shape:
    """One drawn element, in canvas pixels (see /work/notes: the importer's record)."""

    tag: str
    subs: list  # [(points in the Scene layout, closed)]
    fill: object  # None | RGBA | Gradient
    stroke: object
    width: float
    fill_rule: str
    cap: str
    join: str
    miter_limit: float
    dash: tuple
    dash_offset: float
    fill_opacity: float
    stroke_opacity: float
    _bbox: tuple | None = field(default=None, repr=False)

    @property
    def bbox(self) -> tuple:
        """(x0, y0, x1, y1) in pixels, the stroke included (caps and miter tips; conservative)."""
        if self._bbox is None:
            x0, y0, x1, y1 = bounding_box(self.subs)
            grow = 0.0
            if self.stroke is not None:
                half = self.width / 2
                grow = half * (math.sqrt(2) if self.cap == "square" else 1.0)
                if self.join == "miter":
                    for tx, ty in _miter_tips(self.subs, half, self.miter_limit):
                        x0, y0, x1, y1 = min(x0, tx), min(y0, ty), max(x1, tx), max(y1, ty)
            self._bbox = (x0 - grow, y0 - grow, x1 + grow, y1 + grow)
        return self._bbox

    def layers(self) -> int:
        return (self.fill is not None) + (self.stroke is not None)


def _refuse_element(el, tag: str):
    if tag == "image" and (_href(el) or "").strip()[:5].lower() == "data:":
        raise ValueError("SVG element <image> embeds a raster image (a data: URL): embedded raster images are not "
                         "drawn")
    raise ValueError(f"SVG element <{tag}> is not supported ({_REFUSED[tag]} are not drawn)")


class _Reader:
    def __init__(self, root) -> None:
        self.root = root
        self.ids: dict = {}
        sheets = []
        for el in root.iter():
            tag = _local(el.tag)
            if tag is None:
                continue
            _check_refs(el, tag)
            i = el.get("id")
            if i is not None and i not in self.ids:
                self.ids[i] = el
            if tag == "style":
                kind = (el.get("type") or "text/css").strip().lower()
                if kind not in ("text/css", ""):
                    raise ValueError(f"SVG <style> type {kind[:40]!r} is not supported (only text/css)")
                media = (el.get("media") or "all").strip().lower()
                if media not in ("all", "screen", ""):
                    raise ValueError(f"SVG <style media={media[:40]!r}> is not supported")
                sheets.append("".join(el.itertext()))
        self.rules = []
        for text in sheets:
            self.rules += parse_stylesheet(text, first_order=len(self.rules))
        self.matcher = Matcher(root, _local)
        self.buckets: dict = {}
        for rule in self.rules:
            for sel in rule.selectors:
                last = sel.compounds[-1]
                key = ("#", last.ids[0]) if last.ids else (".", last.classes[0]) if last.classes else \
                    ("t", last.tag) if last.tag else ("*", None)
                self.buckets.setdefault(key, []).append((sel, rule))
        self._declared: dict = {}
        self._doc_style: dict = {}
        self.shapes: list[_Shape] = []
        self.groups: dict[tuple[int, int], list] = {}  # (first shape, end shape) -> [opacity, clip rect | None]
        self.uses = 0
        self.drawn_elements = 0
        self.budget = Budget()
        self._gradients: dict = {}
        self.stops_used = 0

    # -- cascade ---------------------------------------------------------------------------------------------------
    def declared(self, el, tag: str) -> dict[str, str]:
        """The cascaded value of every property declared for `el` (presentation attributes < style sheets by
        specificity and order < the style attribute; !important above all, the style attribute's first)."""
        key = id(el)
        if key in self._declared:
            return self._declared[key][1]
        best: dict[str, tuple] = {}

        def offer(prop: str, value: str, rank: tuple, where: str) -> None:
            if prop in _GEOMETRY and where != "attribute":
                raise ValueError(f"SVG property {prop!r} set in CSS ({where}) on <{tag}> is not supported; set it "
                                 "as an attribute")
            if prop not in PROPERTIES:
                if prop in IGNORED_PROPERTIES or (prop.startswith("-") and where != "attribute"):
                    return
                if where == "attribute":
                    return  # an attribute that is not a presentation attribute
                raise ValueError(f"SVG property {prop!r} ({where}) on <{tag}> is not supported")
            if prop not in best or rank > best[prop][0]:
                best[prop] = (rank, value.strip())

        for k, v in el.attrib.items():
            if not k.startswith("{"):
                offer(k, v, (False, 0, (0, 0, 0), 0), "attribute")
        if self.rules:
            cands = list(self.buckets.get(("*", None), ()))
            cands += self.buckets.get(("t", tag), ())
            if el.get("id") is not None:
                cands += self.buckets.get(("#", el.get("id")), ())
            for c in set((el.get("class") or "").split()):
                cands += self.buckets.get((".", c), ())
            for sel, rule in cands:
                if self.matcher.matches(sel, el):
                    for prop, value, imp in rule.declarations:
                        offer(prop, value, (imp, 1, sel.specificity, rule.order), "style sheet")
        if el.get("style"):
            for i, (prop, value, imp) in enumerate(parse_declarations(el.get("style"), f"<{tag}> style")):
                offer(prop, value, (imp, 2, (0, 0, 0), i), "style attribute")
        out = {k: v for k, (_, v) in best.items()}
        self._declared[key] = (el, out)
        return out

    def computed(self, el, tag: str, parent: dict[str, str]) -> dict[str, str]:
        decl = self.declared(el, tag)
        # a parent's computed style holds every property: its inherited values carry over, the others restart
        cs = {**(parent or _INHERITED_INITIAL), **_NOT_INHERITED_INITIAL}
        for prop, v in decl.items():
            low = v.lower()
            if low in ("inherit", "unset") and (low == "inherit" or PROPERTIES[prop][1]):
                cs[prop] = parent.get(prop, PROPERTIES[prop][0])
            elif low in ("initial", "unset"):
                cs[prop] = PROPERTIES[prop][0]
            else:
                cs[prop] = v
            if prop in _DEFAULT_ONLY:
                allowed, what = _DEFAULT_ONLY[prop]
                if " ".join(low.split()) not in allowed | {"inherit", "initial", "unset"}:
                    raise ValueError(f"SVG property {prop}: {v[:60]!r} on <{tag}> is not supported ({what} are not "
                                     "drawn)")
        if cs["color"].strip().lower() == "currentcolor":  # `color: currentColor` is `inherit`
            cs["color"] = parent.get("color", "black")
        return cs

    def doc_style(self, el) -> dict[str, str]:
        """Computed style of `el` in the document tree (for gradients and stops, which inherit from their
        ancestors, not from the element they paint)."""
        key = id(el)
        if key not in self._doc_style:
            chain = []
            e = el
            while e is not None and id(e) not in self._doc_style:
                chain.append(e)
                e = self.matcher.parent.get(e)
            style = self._doc_style[id(e)] if e is not None else {}
            for e in reversed(chain):
                style = self.computed(e, _local(e.tag) or "?", style)
                self._doc_style[id(e)] = style
        return self._doc_style[key]

    # -- tree walk -------------------------------------------------------------------------------------------------
    def _count(self, depth: int) -> None:
        self.drawn_elements += 1
        if self.drawn_elements > MAX_ELEMENTS:
            raise ValueError(f"SVG has more than {MAX_ELEMENTS} elements to draw (after expanding <use>); refusing "
                             "to read it")
        if depth > MAX_DEPTH:
            raise ValueError(f"SVG nests elements deeper than {MAX_DEPTH} levels (counting <use>); refusing to "
                             "read it")

    @staticmethod
    def conditions(el) -> bool:
        if el.get("requiredExtensions") is not None:
            return False  # no extension is supported (an empty list is false too, SVG 2 section 5.8.3)
        langs = el.get("systemLanguage")
        if langs is not None:
            tags = [t.strip().lower() for t in langs.split(",") if t.strip()]
            return any(t == _USER_LANGUAGE or t.startswith(_USER_LANGUAGE + "-") for t in tags)
        return True

    def walk(self, el, parent: dict, ctm: Matrix, viewport: tuple[float, float], depth: int,
             active: tuple = (), sub_override: dict | None = None) -> None:
        tag = _local(el.tag)
        if tag is None or tag in _NON_RENDERING:
            return
        self._count(depth)
        if not self.conditions(el):
            return
        known = tag in _SHAPES or tag in _CONTAINERS
        if not known and tag not in _REFUSED:
            raise ValueError(f"SVG element <{tag}> is not supported")
        st = self.computed(el, tag, parent)
        if st["display"].strip().lower() == "none":
            return  # not drawn (so a hidden <text display="none"> has nothing to refuse)
        if not known:
            _refuse_element(el, tag)
        if el.get("transform"):
            ox, oy = self.origin(st["transform-origin"], viewport)
            t = parse_transform(el.get("transform"))
            if ox or oy:
                t = compose(compose(translate(ox, oy), t), translate(-ox, -oy))
            ctm = compose(ctm, t)
        start = len(self.shapes)
        if tag in ("g", "a"):
            for child in el:
                self.walk(child, st, ctm, viewport, depth + 1, active)
        elif tag == "switch":
            for child in el:
                ctag = _local(child.tag)
                if ctag is None or ctag in _NON_RENDERING:
                    continue
                if self.conditions(child):
                    self.walk(child, st, ctm, viewport, depth + 1, active)
                    break
        elif tag == "svg":
            self.viewport(el, tag, st, ctm, viewport, depth, active, sub_override)
        elif tag == "use":
            self.use(el, st, ctm, viewport, depth, active)
        else:
            self.shape(el, tag, st, ctm, viewport)
        self.clip(el, tag, st, ctm, viewport, start)
        self.group_opacity(el, tag, st, start)

    def origin(self, text: str, viewport) -> tuple[float, float]:
        words = text.split()
        if not 1 <= len(words) <= 3:
            raise ValueError(f"SVG transform-origin {text[:60]!r} must be 1 to 3 values")
        kw = {"left": ("x", 0.0), "right": ("x", 100.0), "top": ("y", 0.0), "bottom": ("y", 100.0),
              "center": (None, 50.0)}
        words = words[:2]
        if len(words) == 1:
            words.append("center")
        a, b = (w.lower() for w in words)
        if kw.get(a, ("",))[0] == "y" or kw.get(b, ("",))[0] == "x":
            a, b = b, a
            words = words[::-1]
        out = []
        for w, ref, axis in zip(words, viewport, "xy"):
            low = w.lower()
            if low in kw:
                if kw[low][0] not in (None, axis):
                    raise ValueError(f"SVG transform-origin {text[:60]!r} is not a valid position")
                out.append(kw[low][1] / 100 * ref)
            else:
                out.append(_length(w, "transform-origin", ref))
        return out[0], out[1]

    def viewport(self, el, tag, st, ctm, viewport, depth, active, sub_override=None) -> None:
        """Nested <svg> (and <symbol> through <use>): its viewport, viewBox and clip."""
        o = sub_override or {}
        vw, vh = viewport
        x = _length(el.get("x", "0"), f"<{tag}> x", vw) if "x" not in o else o["x"]
        y = _length(el.get("y", "0"), f"<{tag}> y", vh) if "y" not in o else o["y"]
        w = o.get("width") if o.get("width") is not None else _length(el.get("width", "100%"), f"<{tag}> width", vw)
        h = o.get("height") if o.get("height") is not None else _length(el.get("height", "100%"), f"<{tag}> height",
                                                                          vh)
        if w < 0 or h < 0:
            raise ValueError(f"SVG <{tag}> width and height must not be negative, got {w:g} x {h:g}")
        if w == 0 or h == 0:
            return
        vbox = _view_box(el.get("viewBox"), f"<{tag}> viewBox")
        if vbox is not None and (vbox[2] == 0 or vbox[3] == 0):
            return
        inner = compose(ctm, viewbox_transform(vbox, x, y, w, h, el.get("preserveAspectRatio"))
                        if vbox is not None else translate(x, y))
        start = len(self.shapes)
        for child in el:
            self.walk(child, st, inner, (vbox[2], vbox[3]) if vbox is not None else (w, h), depth + 1, active)
        overflow = self.declared(el, tag).get("overflow", "hidden").strip().lower()
        if overflow not in ("visible", "auto", "hidden", "scroll", "clip", "inherit", "initial", "unset"):
            raise ValueError(f"SVG overflow {overflow[:30]!r} on <{tag}> is not supported")
        if overflow in ("hidden", "scroll", "clip", "inherit", "initial", "unset"):
            corners = apply(ctm, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
            outside = [s for s in self.shapes[start:] if not _inside(s.bbox, corners)
                       and not _inside_viewport(s, ctm, (x, y, x + w, y + h))]
            if outside:  # clipped: an axis-aligned rectangle in canvas pixels is a layer's coverage mask
                xs, ys = sorted({round(c[0], 6) for c in corners}), sorted({round(c[1], 6) for c in corners})
                if len(xs) > 2 or len(ys) > 2:
                    raise ValueError(f"SVG <{outside[0].tag}> overflows the viewport of its <{tag}>, which clips "
                                     "it, and the viewport is rotated or skewed: only axis-aligned viewport clips "
                                     "are drawn (set overflow=\"visible\" or keep the content inside)")
                self.group(start, len(self.shapes), 1.0, (xs[0], ys[0], xs[-1], ys[-1]), tag)

    def use(self, el, st, ctm, viewport, depth, active) -> None:
        ref = _href(el)
        if ref is None:
            return
        target = self.ids.get(ref.strip()[1:])
        if target is None:
            raise ValueError(f"SVG <use> references {ref[:60]!r}, which is not in the document")
        if id(target) in active or any(a is target for a in self._ancestors(el)):
            raise ValueError(f"SVG <use> of {ref[:60]!r} refers to itself (a cycle); refusing to read it")
        self.uses += 1
        if self.uses > MAX_USE_EXPANSION:
            raise ValueError(f"SVG expands more than {MAX_USE_EXPANSION} <use> elements; refusing to read it "
                             "(a use-bomb)")
        vw, vh = viewport
        x = _length(el.get("x", "0"), "<use> x", vw)
        y = _length(el.get("y", "0"), "<use> y", vh)
        ctm = compose(ctm, translate(x, y))
        ttag = _local(target.tag)
        active = active + (id(target),)
        if ttag in ("symbol", "svg"):
            over = {"width": _length(el.get("width"), "<use> width", vw),
                    "height": _length(el.get("height"), "<use> height", vh)}
            if ttag == "symbol":
                for name in ("x", "y", "refX", "refY", "transform"):
                    if target.get(name) not in (None, "0"):
                        raise ValueError(f"SVG {name} on <symbol> is not supported")
                over.update(x=0.0, y=0.0)
            self._count(depth + 1)
            tst = self.computed(target, ttag, st)
            if tst["display"].strip().lower() == "none":
                return
            start = len(self.shapes)
            if target.get("transform"):
                ox, oy = self.origin(tst["transform-origin"], viewport)
                t = parse_transform(target.get("transform"))
                ctm = compose(ctm, compose(compose(translate(ox, oy), t), translate(-ox, -oy)))
            if tst["clip-path"].strip().lower() != "none":
                raise ValueError(f"SVG clip-path on a <{ttag}> drawn through <use> is not supported (renderers "
                                 "disagree on its coordinate system); put it on the <use>")
            self.viewport(target, ttag, tst, ctm, viewport, depth + 1, active, over)
            self.group_opacity(target, ttag, tst, start)
        else:
            self.walk(target, st, ctm, viewport, depth + 1, active)

    def _ancestors(self, el):
        p = self.matcher.parent.get(el)
        while p is not None:
            yield p
            p = self.matcher.parent.get(p)

    def group_opacity(self, el, tag, st, start: int) -> None:
        """`opacity` composites an element as one layer: a group over the shapes it drew (multiplied into the one
        shape instead when it draws a single layer, which is the same drawing)."""
        op = _fraction(st["opacity"], f"<{tag}> opacity")
        if op >= 1:
            return
        drawn = self.shapes[start:]
        if len(drawn) == 1 and drawn[0].layers() == 1:  # a clip on it commutes with the multiplication
            drawn[0].fill_opacity *= op
            drawn[0].stroke_opacity *= op
        elif drawn:
            self.group(start, len(self.shapes), op, None, tag)

    def clip(self, el, tag, st, ctm, viewport, start: int) -> None:
        """`clip-path: url(#id)` (SVG 2 section 14.3) whose clipPath is, in canvas pixels, an axis-aligned
        rectangle (Figma's whole-canvas clip, a viewport-like crop): a group over the shapes the element drew
        with that rectangle as its clip, drawn exactly (the clip's box-filtered coverage times the layer). Any
        other clip shape is refused by name."""
        value = st["clip-path"].strip()
        if value.lower() == "none":
            return
        kind, ref, _ = _paint(value, f"<{tag}> clip-path")
        if kind != "url":
            raise ValueError(f"SVG clip-path {value[:60]!r} on <{tag}> is not supported (only url(#id) of a "
                             "rectangular <clipPath> is drawn)")
        target = self.ids.get(ref)
        if target is None or _local(target.tag) != "clipPath":
            raise ValueError(f"SVG clip-path url(#{ref[:40]}) on <{tag}> references "
                             f"{'nothing' if target is None else '<' + str(_local(target.tag)) + '>'}, not a "
                             "<clipPath>")
        if start == len(self.shapes):
            return  # nothing drawn, nothing to clip
        cst = self.computed(target, "clipPath", st)
        if cst["clip-path"].strip().lower() != "none":
            raise ValueError("SVG clip-path on a <clipPath> is not supported (clip paths are drawn only as one "
                             "axis-aligned rectangle)")
        m = ctm
        if target.get("transform"):
            m = compose(m, parse_transform(target.get("transform")))
        units = (target.get("clipPathUnits") or "userSpaceOnUse").strip()
        if units == "objectBoundingBox":
            x0, y0, x1, y1 = _user_bbox(self.shapes[start:], ctm)
            if not (x1 > x0 and y1 > y0):
                self.shapes[start:] = []  # SVG: a bounding-box clip of an element without area clips it all
                return
            m = compose(m, (x1 - x0, 0.0, 0.0, y1 - y0, x0, y0))
        elif units != "userSpaceOnUse":
            raise ValueError(f"SVG clipPathUnits {units[:40]!r} is not supported")
        rects = []
        for child in target:
            ctag = _local(child.tag)
            if ctag is None or ctag in ("title", "desc", "metadata"):
                continue
            if ctag not in _SHAPES:
                raise ValueError(f"SVG <clipPath> child <{ctag}> is not supported (clip paths are drawn only as one "
                                 "axis-aligned rectangle)")
            if not self.conditions(child):
                continue
            chst = self.computed(child, ctag, cst)
            if chst["display"].strip().lower() == "none" or \
                    chst["visibility"].strip().lower() in ("hidden", "collapse"):
                continue
            if chst["clip-path"].strip().lower() != "none":
                raise ValueError("SVG clip-path on a <clipPath> child is not supported")
            cm = compose(m, parse_transform(child.get("transform"))) if child.get("transform") else m
            d = child.get("d") if ctag == "path" else _shape_data(ctag, child, viewport)
            if not d:
                continue
            subs = d if isinstance(d, list) else list(subpaths(d, self.budget))
            rect = _axis_rectangle([(apply(cm, pts), closed) for pts, closed in subs])
            if rect is None:
                raise ValueError(f"SVG clip-path url(#{ref[:40]}) on <{tag}>: its <{ctag}> is not an axis-aligned "
                                 "rectangle on the canvas; only rectangular clip paths are drawn (polygon, curved and "
                                 "rotated clips are not)")
            rects.append(rect)
        if not rects:
            self.shapes[start:] = []  # an empty clip path clips everything away
            return
        if any(r != rects[0] for r in rects[1:]):
            raise ValueError(f"SVG clip-path url(#{ref[:40]}) on <{tag}> is a union of several rectangles; only one "
                             "rectangle is drawn")
        self.group(start, len(self.shapes), 1.0, rects[0], tag)

    def group(self, start: int, end: int, opacity: float, clip, tag: str) -> None:
        """A layer over shapes [start, end): one entry per range (a group of a group of the same shapes is one
        layer with the product of the opacities and the intersection of the clips)."""
        entry = self.groups.get((start, end))
        if entry is None:
            if len(self.groups) >= MAX_GROUPS:
                raise ValueError(f"SVG has more than {MAX_GROUPS} layers to composite (group opacity on overlapping "
                                 f"shapes, clipping viewports; the last one a <{tag}>); refusing to draw it")
            self.groups[(start, end)] = [opacity, clip]
            return
        entry[0] *= opacity
        if clip is not None and entry[1] is not None:  # the intersection (empty: x1 = x0 or y1 = y0)
            x0, y0 = max(entry[1][0], clip[0]), max(entry[1][1], clip[1])
            entry[1] = (x0, y0, max(min(entry[1][2], clip[2]), x0), max(min(entry[1][3], clip[3]), y0))
        elif clip is not None:
            entry[1] = clip

    def gradient_def(self, el):
        """(attribute lookup along the href chain, stops) of a gradient element, resolved once per element: a file
        that paints thousands of shapes from one long chain of many stops costs one resolution, not thousands."""
        key = id(el)
        if key in self._gradients:
            return self._gradients[key]
        chain, e = [], el
        while e is not None:
            if any(c is e for c in chain):
                raise ValueError(f"SVG gradient href chain from #{el.get('id', '')[:40]} is a cycle")
            chain.append(e)
            if len(chain) > MAX_HREF_CHAIN:
                raise ValueError(f"SVG gradient href chain is longer than {MAX_HREF_CHAIN}")
            ref = _href(e)
            if ref is None:
                break
            e = self.ids.get(ref.strip()[1:])
            if e is None:
                raise ValueError(f"SVG gradient href {ref[:60]!r} references nothing in the document")
            if _local(e.tag) not in ("linearGradient", "radialGradient"):
                raise ValueError(f"SVG gradient href {ref[:60]!r} references a <{_local(e.tag)}>")
        attrs: dict = {}
        for g in reversed(chain):  # the nearest element that sets an attribute wins
            attrs.update(g.attrib)

        def attr(name, default=None):
            return attrs.get(name, default)

        stops_el = next(([s for s in g if _local(s.tag) == "stop"] for g in chain
                         if any(_local(s.tag) == "stop" for s in g)), [])
        if len(stops_el) > MAX_STOPS:
            raise ValueError(f"SVG gradient has more than {MAX_STOPS} stops")
        stops, last = [], 0.0
        for s in stops_el:
            sst = self.doc_style(s)
            off = max(_fraction(s.get("offset", "0"), "<stop> offset"), last)
            last = off
            c = _colour(sst["stop-color"], "<stop> stop-color", _colour(sst["color"], "color"))
            stops.append((off, (c[0], c[1], c[2], c[3] * _fraction(sst["stop-opacity"], "<stop> stop-opacity"))))
        self._gradients[key] = (attr, stops)
        return attr, stops

    # -- shapes ----------------------------------------------------------------------------------------------------
    def shape(self, el, tag, st, ctm, viewport) -> None:
        for child in el:
            ctag = _local(child.tag)
            if ctag in _REFUSED:
                raise ValueError(f"SVG element <{ctag}> inside <{tag}> is not supported ({_REFUSED[ctag]} are not "
                                 "drawn)")
        d = el.get("d") if tag == "path" else _shape_data(tag, el, viewport)
        visibility = st["visibility"].strip().lower()
        if visibility not in ("visible", "hidden", "collapse"):
            raise ValueError(f"SVG visibility {visibility[:30]!r} on <{tag}> is not supported")
        if not d or visibility in ("hidden", "collapse"):
            return
        if isinstance(d, list):  # a basic shape, already as subpaths: its commands count as path data would
            self.budget.spend(sum(2 * len(pts) // 3 + 1 for pts, _ in d))
            subs_user = d
        else:
            subs_user = list(subpaths(d, self.budget))
        if not subs_user:
            return
        if len(self.shapes) >= MAX_PATHS:
            raise ValueError(f"SVG has more than {MAX_PATHS} shapes; refusing to read it")
        vw, vh = viewport
        diag = math.sqrt((vw * vw + vh * vh) / 2)
        color = _colour(st["color"], "color")
        bbox_user = _Lazy(lambda: bounding_box(subs_user))
        fill = self.paint(st["fill"], "fill", tag, color, bbox_user, ctm, viewport)
        stroke = self.paint(st["stroke"], "stroke", tag, color, bbox_user, ctm, viewport)
        width = _length(st["stroke-width"], f"<{tag}> stroke-width", diag)
        if width < 0:
            raise ValueError(f"SVG stroke-width must not be negative on <{tag}>, got {st['stroke-width'][:40]!r}")
        if width == 0:
            stroke = None
        scale = 1.0
        if stroke is not None:
            dashed = st["stroke-dasharray"].strip().lower() != "none"
            # the control polygon's length bounds the curve's
            length = sum(math.dist(p, q) for pts, closed in subs_user
                         for p, q in zip(pts, list(pts[1:]) + ([pts[0]] if closed else []))) if dashed else 0.0
            scale = _pixel_scale(ctm, f"stroke of <{tag}>", width / 2 + length)
        cap = st["stroke-linecap"].strip().lower()
        join = st["stroke-linejoin"].strip().lower()
        if cap not in ("butt", "round", "square"):
            raise ValueError(f"SVG stroke-linecap {cap[:30]!r} on <{tag}> is not supported")
        if join not in ("miter", "round", "bevel"):
            raise ValueError(f"SVG stroke-linejoin {join[:30]!r} on <{tag}> is not supported (miter, round, bevel)")
        miter = number(st["stroke-miterlimit"], f"<{tag}> stroke-miterlimit")
        if miter < 1:
            raise ValueError(f"SVG stroke-miterlimit must be >= 1 on <{tag}>, got {miter:g}")
        dash = self.dashes(st["stroke-dasharray"], tag, diag, scale) if stroke is not None else ()
        offset = _length(st["stroke-dashoffset"], f"<{tag}> stroke-dashoffset", diag) * scale if dash else 0.0
        if dash and el.get("pathLength") is not None:
            raise ValueError(f"SVG pathLength with stroke-dasharray on <{tag}> is not supported")
        rule = st["fill-rule"].strip().lower()
        if rule not in ("nonzero", "evenodd"):
            raise ValueError(f"SVG fill-rule {rule[:30]!r} on <{tag}> is not supported")
        if fill is None and stroke is None:
            return
        subs = []
        for pts, closed in subs_user:
            q = apply(ctm, pts)
            flat = [v for xy in q for v in xy]
            # the sum of bounded numbers is finite unless one is NaN or infinite (min/max alone miss NaN)
            if not (math.isfinite(sum(flat)) and -MAX_COORD <= min(flat) and max(flat) <= MAX_COORD):
                raise ValueError(f"SVG coordinates must stay within +-{MAX_COORD:g} pixels after transforms")
            subs.append((q, closed))
        shape = _Shape(tag, subs, fill, stroke, width * scale, rule, cap, join, miter, dash, offset,
                       _fraction(st["fill-opacity"], f"<{tag}> fill-opacity"),
                       _fraction(st["stroke-opacity"], f"<{tag}> stroke-opacity"))
        if _stroke_first(st["paint-order"], tag) and fill is not None and stroke is not None:
            # paint-order: stroke below the fill = two layers, the stroke drawn first (exact)
            self.shapes.append(replace(shape, fill=None))
            self.shapes.append(replace(shape, stroke=None, _bbox=None))
        else:
            self.shapes.append(shape)

    def dashes(self, text: str, tag: str, diag: float, scale: float) -> tuple:
        if text.strip().lower() == "none":
            return ()
        parts = [p for p in text.replace(",", " ").split() if p]
        if len(parts) > MAX_DASHES:
            raise ValueError(f"SVG stroke-dasharray on <{tag}> has more than {MAX_DASHES} lengths")
        vals = [_length(p, f"<{tag}> stroke-dasharray", diag) for p in parts]
        if any(v < 0 for v in vals):
            raise ValueError(f"SVG stroke-dasharray on <{tag}> has a negative length: {text[:60]!r}")
        if not vals or sum(vals) <= 0:
            return ()
        return tuple(v * scale for v in vals)

    def paint(self, value, prop, tag, color: RGBA, bbox_user, ctm, viewport):
        kind, v, fallback = _paint(value, f"<{tag}> {prop}")
        if kind == "none":
            return None
        if kind == "color":
            return _colour(v, f"<{tag}> {prop}", color)
        target = self.ids.get(v)
        if target is None:
            if fallback is not None:
                return self.paint(fallback, prop, tag, color, bbox_user, ctm, viewport)
            raise ValueError(f"SVG {prop} url(#{v[:40]}) on <{tag}> references nothing in the document")
        ttag = _local(target.tag)
        if ttag not in ("linearGradient", "radialGradient"):
            raise ValueError(f"SVG {prop} url(#{v[:40]}) on <{tag}> references a <{ttag}>, which is not supported "
                             "as a paint (only linear and radial gradients are)")
        return self.gradient(target, ttag, prop, tag, bbox_user, ctm, viewport)

    def gradient(self, el, kind_tag, prop, tag, bbox_user, ctm, viewport):
        attr, stops = self.gradient_def(el)
        if not stops:
            return None
        if len(stops) == 1:
            return stops[0][1]
        self.stops_used += len(stops)
        if self.stops_used > MAX_GRADIENT_STOPS:
            raise ValueError(f"SVG paints shapes with more than {MAX_GRADIENT_STOPS} gradient stops in all (each "
                             "gradient paint counts its stops); refusing to read it")
        units = (attr("gradientUnits") or "objectBoundingBox").strip()
        if units not in ("objectBoundingBox", "userSpaceOnUse"):
            raise ValueError(f"SVG gradientUnits {units[:40]!r} is not supported")
        spread = (attr("spreadMethod") or "pad").strip()
        if spread not in ("pad", "reflect", "repeat"):
            raise ValueError(f"SVG spreadMethod {spread[:40]!r} is not supported")
        m = ctm
        if units == "objectBoundingBox":
            x0, y0, x1, y1 = bbox_user()
            if not (x1 - x0 > 0 and y1 - y0 > 0):
                raise ValueError(f"SVG {prop} gradient in objectBoundingBox units on a <{tag}> with no width or "
                                 "height is not drawn by SVG; refusing it rather than guessing")
            m = compose(m, (x1 - x0, 0.0, 0.0, y1 - y0, x0, y0))
            ref_w = ref_h = ref_d = 1.0
        else:
            ref_w, ref_h = viewport
            ref_d = math.sqrt((ref_w ** 2 + ref_h ** 2) / 2)
        gt = attr("gradientTransform")
        if gt:
            m = compose(m, parse_transform(gt))

        def L(name, default, ref):  # noqa: N802
            text = attr(name, default)
            if units == "objectBoundingBox":
                t = text.strip()
                return number(t[:-1], f"gradient {name}") / 100 if t.endswith("%") else number(t, f"gradient {name}")
            return _length(text, f"gradient {name}", ref)

        if kind_tag == "linearGradient":
            geom = (L("x1", "0%", ref_w), L("y1", "0%", ref_h), L("x2", "100%", ref_w), L("y2", "0%", ref_h))
            if geom[0] == geom[2] and geom[1] == geom[3]:
                return stops[-1][1]
            kind = "linear"
        else:
            cx, cy, r = L("cx", "50%", ref_w), L("cy", "50%", ref_h), L("r", "50%", ref_d)
            fx = L("fx", None, ref_w) if attr("fx") is not None else cx
            fy = L("fy", None, ref_h) if attr("fy") is not None else cy
            fr = L("fr", "0%", ref_d)
            if r < 0 or fr < 0:
                raise ValueError("SVG radialGradient r and fr must not be negative")
            if r == 0:
                return stops[-1][1]
            geom = (cx, cy, r, fx, fy, fr)
            kind = "radial"
        if abs(m[0] * m[3] - m[1] * m[2]) < 1e-12:
            raise ValueError(f"SVG {prop} gradient on <{tag}> has a singular transform")
        return Gradient.make(kind, stops, geom, m, spread)


class _Lazy:
    def __init__(self, fn) -> None:
        self.fn, self.value = fn, None

    def __call__(self):
        if self.value is None:
            self.value = self.fn()
        return self.value


def _tangent(a, b, c, d):
    for u, v in ((b, a), (c, a), (d, a)):
        dx, dy = u[0] - v[0], u[1] - v[1]
        n = math.hypot(dx, dy)
        if n > 1e-9:
            return dx / n, dy / n
    return None


def _miter_tips(subs, half: float, limit: float):
    """The tips of the miter joins of a stroke (where the miter is within the limit), for its bounding box."""
    for pts, closed in subs:
        ring = list(pts) + [pts[0]] if closed else list(pts)
        segs = [ring[k:k + 4] for k in range(0, len(ring) - 3, 3)]
        pairs = list(zip(segs, segs[1:])) + ([(segs[-1], segs[0])] if closed and segs else [])
        for s1, s2 in pairs:
            d1 = _tangent(s1[3], s1[2], s1[1], s1[0])
            d2 = _tangent(s2[0], s2[1], s2[2], s2[3])
            if d1 is None or d2 is None:
                continue
            d1 = (-d1[0], -d1[1])  # direction of travel into the joint
            cos_turn = d1[0] * d2[0] + d1[1] * d2[1]
            if cos_turn > 1 - 1e-9:
                continue  # smooth: no corner
            sin_half = math.sqrt(max((1 + cos_turn) / 2, 0.0))  # sin of half the angle between the segments
            if sin_half < 1e-9 or 1 / sin_half > limit:
                continue  # beveled
            bx, by = d1[0] - d2[0], d1[1] - d2[1]
            n = math.hypot(bx, by)
            r = half / sin_half
            x, y = s2[0]
            yield x + bx / n * r, y + by / n * r


def _user_bbox(shapes: list, ctm: Matrix) -> tuple:
    """The geometry's bounding box of `shapes` (canvas pixels) in the user space `ctm` maps to pixels."""
    a, b, c, d, e, f = ctm
    det = a * d - b * c
    if abs(det) < 1e-12:
        return (0.0, 0.0, 0.0, 0.0)
    inv = (d / det, -b / det, -c / det, a / det, (c * f - d * e) / det, (b * e - a * f) / det)
    return bounding_box([(apply(inv, pts), closed) for s in shapes for pts, closed in s.subs])


def _axis_rectangle(subs: list, eps: float = 1e-6) -> tuple | None:
    """(x0, y0, x1, y1) when the subpaths (points in the Scene layout) fill exactly an axis-aligned rectangle: one
    subpath, every segment a straight piece of the rectangle's border, enclosing its whole area; else None."""
    subs = [(pts, closed) for pts, closed in subs if len(pts) >= 4]
    if len(subs) != 1:
        return None
    pts, closed = subs[0]
    ring = list(pts) + ([pts[0]] if closed else [])
    if ring[-1] != ring[0]:  # a clip's fill closes an open subpath with a straight line
        ring += [lerp(ring[-1], ring[0], 1 / 3), lerp(ring[-1], ring[0], 2 / 3), ring[0]]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    tol = eps * max(1.0, x1 - x0, y1 - y0)
    if not (x1 - x0 > tol and y1 - y0 > tol):
        return None
    area = 0.0
    for k in range(0, len(ring) - 3, 3):
        seg = ring[k:k + 4]
        on_x = all(abs(p[0] - seg[0][0]) <= tol for p in seg) and min(abs(seg[0][0] - x0), abs(seg[0][0] - x1)) <= tol
        on_y = all(abs(p[1] - seg[0][1]) <= tol for p in seg) and min(abs(seg[0][1] - y0), abs(seg[0][1] - y1)) <= tol
        if not (on_x or on_y):
            return None
        area += seg[0][0] * seg[3][1] - seg[3][0] * seg[0][1]
    if abs(abs(area) / 2 - (x1 - x0) * (y1 - y0)) > tol * (x1 - x0 + y1 - y0):
        return None
    return (x0, y0, x1, y1)


def _inside(box, quad) -> bool:
    """Whether the box (x0, y0, x1, y1) lies inside the convex quadrilateral (with 0.01 px of slack)."""
    x0, y0, x1, y1 = box
    sign = 0.0
    for i in range(4):
        (ax, ay), (bx, by) = quad[i], quad[(i + 1) % 4]
        for px, py in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
            length = math.hypot(bx - ax, by - ay) or 1.0
            c = cross / length
            if sign == 0.0 and abs(c) > 0.01:
                sign = math.copysign(1.0, c)
            if sign and c * sign < -0.01:
                return False
    return True


def _inside_viewport(shape: _Shape, ctm: Matrix, rect) -> bool:
    """Whether the shape (its stroke's reach included) lies inside the viewport `rect` (x0, y0, x1, y1) of the
    coordinate system `ctm` maps to pixels: tested in that system, so a rotated viewport is not judged by the
    pixel-space bounding box of its content."""
    a, b, c, d, e, f = ctm
    det = a * d - b * c
    if abs(det) < 1e-12:
        return False
    inv = (d / det, -b / det, -c / det, a / det, (c * f - d * e) / det, (b * e - a * f) / det)
    x0, y0, x1, y1 = bounding_box([(apply(inv, pts), closed) for pts, closed in shape.subs])
    if shape.stroke is not None:
        half = shape.width / 2
        tips = apply(inv, list(_miter_tips(shape.subs, half, shape.miter_limit))) if shape.join == "miter" else []
        for tx, ty in tips:
            x0, y0, x1, y1 = min(x0, tx), min(y0, ty), max(x1, tx), max(y1, ty)
        p, q = (a * a + b * b + c * c + d * d) / 2, abs(det)
        s_min = math.sqrt(max(p - math.sqrt(max(p * p - q * q, 0.0)), 1e-24))  # the least scale ctm applies
        grow = half * (math.sqrt(2) if shape.cap == "square" else 1.0) / s_min
        x0, y0, x1, y1 = x0 - grow, y0 - grow, x1 + grow, y1 + grow
    slack = 0.01 / math.sqrt(abs(det))
    return x0 >= rect[0] - slack and y0 >= rect[1] - slack and x1 <= rect[2] + slack and y1 <= rect[3] + slack


def _lines(pts: list, closed: bool) -> list:
    """The subpath `M p0 L p1 ... [Z]` reads as (what `subpaths` makes of that text, without the text)."""
    q = [pts[0]]
    for a, b in zip(pts, pts[1:]):
        q += [lerp(a, b, 1 / 3), lerp(a, b, 2 / 3), b]
    if closed:
        if math.dist(q[-1], q[0]) > 1e-9:  # close with a straight line
            q += [lerp(q[-1], q[0], 1 / 3), lerp(q[-1], q[0], 2 / 3), q[0]]
        q = q[:-1]
    return [(q, closed)]


def _bounded(subs: list, tag: str) -> list:
    flat = [v for pts, _ in subs for xy in pts for v in xy]
    if not (math.isfinite(sum(flat)) and -MAX_COORD <= min(flat) and max(flat) <= MAX_COORD):
        raise ValueError(f"SVG <{tag}> coordinates must be finite with magnitude <= {MAX_COORD:g}")
    return subs


def _shape_data(tag: str, el, viewport) -> str | list | None:
    """Basic shapes (SVG 2 section 10 equivalences) as their subpaths in the `subpaths` layout, or as path data
    for a rounded rect; lengths may be percentages of the viewport."""
    vw, vh = viewport
    diag = math.sqrt((vw * vw + vh * vh) / 2)
    ref = {"x": vw, "y": vh, "width": vw, "height": vh, "cx": vw, "cy": vh, "r": diag, "rx": vw, "ry": vh,
           "x1": vw, "x2": vw, "y1": vh, "y2": vh}
    g = lambda k, default=None: _length(el.get(k, default), f"<{tag}> {k}", ref[k])  # noqa: E731
    if tag == "line":
        return _bounded(_lines([(g("x1", "0"), g("y1", "0")), (g("x2", "0"), g("y2", "0"))], False), tag)
    if tag in ("polyline", "polygon"):
        nums = _points(el.get("points", ""), tag)
        if len(nums) < 4:
            return None
        return _lines(list(zip(nums[::2], nums[1::2])), tag == "polygon")  # each number is bounded already
    if tag == "rect":
        x, y, w, h = g("x", "0"), g("y", "0"), g("width", "0"), g("height", "0")
        if w < 0 or h < 0:
            raise ValueError(f"SVG <rect> width and height must not be negative, got {w:g} x {h:g}")
        if w == 0 or h == 0:
            return None
        rx, ry = el.get("rx"), el.get("ry")
        rx = g("rx") if rx is not None and rx.strip() != "auto" else None
        ry = g("ry") if ry is not None and ry.strip() != "auto" else None
        if (rx is not None and rx < 0) or (ry is not None and ry < 0):
            raise ValueError("SVG <rect> rx and ry must not be negative")
        rx, ry = (rx if rx is not None else ry or 0.0), (ry if ry is not None else rx or 0.0)
        rx, ry = min(rx, w / 2), min(ry, h / 2)
        if rx <= 0 or ry <= 0:
            return _bounded(_lines([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], True), tag)
        return (f"M {x + rx} {y} H {x + w - rx} A {rx} {ry} 0 0 1 {x + w} {y + ry} V {y + h - ry} "
                f"A {rx} {ry} 0 0 1 {x + w - rx} {y + h} H {x + rx} A {rx} {ry} 0 0 1 {x} {y + h - ry} "
                f"V {y + ry} A {rx} {ry} 0 0 1 {x + rx} {y} Z")
    if tag in ("circle", "ellipse"):
        cx, cy = g("cx", "0"), g("cy", "0")
        if tag == "circle":
            rx = ry = g("r", "0")
        else:
            rx, ry = el.get("rx", "auto"), el.get("ry", "auto")
            rx = g("rx") if rx.strip() != "auto" else None
            ry = g("ry") if ry.strip() != "auto" else None
            rx, ry = (rx if rx is not None else ry or 0.0), (ry if ry is not None else rx or 0.0)
        if rx < 0 or ry < 0:
            raise ValueError(f"SVG <{tag}> radius must not be negative")
        if rx == 0 or ry == 0:
            return None
        kx, ky = rx * _KAPPA, ry * _KAPPA
        return _bounded([([(cx + rx, cy), (cx + rx, cy + ky), (cx + kx, cy + ry), (cx, cy + ry),
                           (cx - kx, cy + ry), (cx - rx, cy + ky), (cx - rx, cy), (cx - rx, cy - ky),
                           (cx - kx, cy - ry), (cx, cy - ry), (cx + kx, cy - ry), (cx + rx, cy - ky)], True)], tag)
    return None


def _points(text: str, tag: str) -> list[float]:
    vals = [number(s, f"<{tag}> points") for s in text.replace(",", " ").split()]
    if len(vals) > 8 * MAX_COMMANDS:
        raise ValueError(f"SVG <{tag}> has more than {8 * MAX_COMMANDS} numbers; refusing to read it")
    return vals[: len(vals) - len(vals) % 2]  # an odd last number is an error SVG renders up to


# ------------------------------------------------------------------------------------------------- entry point
_ENTITY_REF = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)[A-Za-z_:][^;\s<&]{0,40};")


def _parse_xml(text):
    """defusedxml's parser with entities and external references refused. A DOCTYPE is read only in its plain
    form, a name with public and system identifiers (what Illustrator, Inkscape and Affinity exports carry; the
    external DTD is never fetched): an internal subset could declare entities or default attribute values that
    change the drawing, and an entity reference the parser would skip is refused rather than dropped."""
    parser = SafeET.DefusedXMLParser(target=SafeET._TreeBuilder(), forbid_dtd=False, forbid_entities=True,
                                     forbid_external=True)

    def doctype(name, sysid, pubid, has_internal_subset):
        if has_internal_subset:
            raise DTDForbidden(name, sysid, pubid)

    def skipped(name, is_parameter_entity):
        raise EntitiesForbidden(name, None, None, None, None, None)

    parser.parser.StartDoctypeDeclHandler = doctype
    parser.parser.SkippedEntityHandler = skipped
    doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if "<!DOCTYPE" in doc:  # with a DOCTYPE, expat drops an undeclared entity in an attribute without a word
        m = _ENTITY_REF.search(doc)
        if m is not None:
            raise ValueError(f"SVG refused: entity reference {m.group(0)[:40]!r} (entities are not read)")
    parser.feed(text)
    return parser.close()


def from_svg(text: str, device=None, dtype=None) -> Scene:
    """Read an SVG document into a one-scene batch (see the module docstring for what is drawn and refused).

    The canvas is `width` x `height` (rounded; or the viewBox size), the viewBox mapped onto it by
    `preserveAspectRatio`. A full-canvas `<rect id="background">` with a solid fill (as `to_svg` writes) becomes
    the scene background, otherwise it is transparent. Raises `ValueError` for unsafe, oversized or unsupported
    input, naming the element or property.
    """
    import torch

    if not isinstance(text, (str, bytes)):
        raise ValueError(f"`text` must be SVG markup (str), got {type(text).__name__}")
    if len(text) > MAX_SVG_CHARS:
        raise ValueError(f"SVG is {len(text)} characters; the limit is {MAX_SVG_CHARS}")
    try:
        root = _parse_xml(text)
    except DefusedXmlException as err:
        what = "a DOCTYPE with an internal subset (declarations)" if isinstance(err, DTDForbidden) else \
            "entities" if isinstance(err, EntitiesForbidden) else "external references"
        raise ValueError(f"SVG refused: it declares {what}, which are not read ({type(err).__name__})") from None
    except SafeET.ParseError as err:
        raise ValueError(f"SVG could not be parsed: {err}") from None
    if _local(root.tag) != "svg":
        raise ValueError(f"SVG root element must be <svg>, got <{_local(root.tag) or root.tag[:40]}>")
    n_el = sum(1 for _ in root.iter())
    if n_el > MAX_ELEMENTS:
        raise ValueError(f"SVG has more than {MAX_ELEMENTS} elements; refusing to read it")
    reader = _Reader(root)

    # canvas: width/height, else the viewBox size; the viewBox maps onto it by preserveAspectRatio
    vbox = _view_box(root.get("viewBox"), "viewBox")
    if vbox is not None and (vbox[2] <= 0 or vbox[3] <= 0):
        raise ValueError(f"SVG viewBox must be 4 numbers with positive size, got {root.get('viewBox')[:60]!r}")
    wv, hv = (root.get("width"), root.get("height"))
    wv = None if wv is None or wv.strip().endswith("%") or wv.strip() == "auto" else _length(wv, "width")
    hv = None if hv is None or hv.strip().endswith("%") or hv.strip() == "auto" else _length(hv, "height")
    if wv is None and vbox is not None:
        wv = vbox[2] if hv is None else hv * vbox[2] / vbox[3]
    if hv is None and vbox is not None:
        hv = vbox[3] if wv is None else wv * vbox[3] / vbox[2]
    if wv is None or hv is None:
        raise ValueError("SVG must give width and height or a viewBox")
    width, height = round(wv), round(hv)
    if not (1 <= width <= MAX_CANVAS and 1 <= height <= MAX_CANVAS):
        raise ValueError(f"SVG canvas must be between 1 and {MAX_CANVAS} pixels per side, got {wv:g} x {hv:g}")
    base = IDENTITY
    if vbox is not None:
        base = viewbox_transform(vbox, 0.0, 0.0, float(width), float(height), root.get("preserveAspectRatio"))
    viewport = (vbox[2], vbox[3]) if vbox is not None else (float(width), float(height))

    reader._count(0)
    st = reader.computed(root, "svg", {})
    if root.get("transform"):
        if vbox is not None:  # browsers apply it outside the viewBox mapping (a CSS box transform), resvg inside
            raise ValueError("SVG transform on the root <svg> together with a viewBox is not supported (renderers "
                             "disagree on where it applies); move it onto a <g>")
        t = parse_transform(root.get("transform"))
        ox, oy = reader.origin(st["transform-origin"], (float(width), float(height)))
        base = compose(compose(compose(translate(ox, oy), t), translate(-ox, -oy)), base)
    background = None
    root_opacity = _fraction(st["opacity"], "<svg> opacity")
    if st["display"].strip().lower() != "none":
        for child in root:
            if background is None and not reader.shapes and _local(child.tag) == "rect" \
                    and child.get("id") == "background" and root_opacity >= 1:
                background = _background(reader, child, st, base, viewport, width, height)
                if background is not None:
                    continue
            reader.walk(child, st, base, viewport, 1)
        reader.clip(root, "svg", st, base, viewport, 0)
        reader.group_opacity(root, "svg", st, 0)
    if not reader.shapes:
        raise ValueError("SVG contains no paths or shapes to draw")
    groups = [(a, b, op) if clip is None else (a, b, op, clip) for (a, b), (op, clip) in reader.groups.items()
              if op < 1 or clip is not None]
    _check_layer_area(reader.shapes, groups, width, height)
    return _to_scene(reader.shapes, width, height, background, device, dtype or torch.float32, groups)


def _check_layer_area(shapes: list, groups: list, width: int, height: int) -> None:
    """Every group is drawn on a layer of its own and composited, costing its area on the canvas at every drawing
    step: the layers' summed area (their shapes' box, within the clip and the canvas) is capped before any work,
    so 63 nested clipping viewports over a large canvas are refused instead of taking a minute per step."""
    total = 0.0
    for g in groups:
        boxes = [shapes[i].bbox for i in range(g[0], g[1])]
        x0, y0 = min(b[0] for b in boxes) - 2, min(b[1] for b in boxes) - 2
        x1, y1 = max(b[2] for b in boxes) + 2, max(b[3] for b in boxes) + 2
        if len(g) > 3 and g[3] is not None:
            x0, y0, x1, y1 = max(x0, g[3][0]), max(y0, g[3][1]), min(x1, g[3][2]), min(y1, g[3][3])
        total += max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    limit = MAX_GROUP_PIXELS + 2 * width * height
    if total > limit:
        raise ValueError(f"SVG composites {len(groups)} layers (group opacity, clips, clipping viewports) covering "
                         f"{total / 1e6:.1f} M pixels in all, more than the {limit / 1e6:.1f} M allowed for this "
                         "canvas; refusing to draw it")


def _background(reader: _Reader, el, parent, base, viewport, width, height):
    """A full-canvas, solid, unstroked first `<rect id="background">` as the scene background (or None)."""
    start, groups = len(reader.shapes), dict(reader.groups)
    reader.walk(el, parent, base, viewport, 1)
    drawn = reader.shapes[start:]
    if len(drawn) != 1:
        del reader.shapes[start:]
        reader.groups = groups
        return None
    s = drawn[0]
    x0, y0, x1, y1 = s.bbox
    del reader.shapes[start:]
    if (start, start + 1) in reader.groups or s.stroke is not None or not isinstance(s.fill, tuple) \
            or max(abs(x0), abs(y0), abs(x1 - width), abs(y1 - height)) > 0.5 \
            or len(s.subs) != 1 or len(s.subs[0][0]) != 12:
        reader.shapes.append(s)
        return ()  # drawn as an ordinary shape
    r, g, b, a = s.fill
    return (r, g, b, a * s.fill_opacity)


def _to_scene(shapes: list[_Shape], width: int, height: int, background, device, dtype, groups=()) -> Scene:
    rules = {s.fill_rule for s in shapes if s.fill is not None}
    scene_rule = "evenodd" if rules == {"evenodd"} else "nonzero"
    paths = []
    for s in shapes:
        (first, closed), rest = s.subs[0], s.subs[1:]
        stroke = s.stroke if s.stroke is not None else (0.0, 0.0, 0.0, 0.0)
        paths.append(Path(first, degrees=3, closed=closed, subpaths=[Subpath(p, 3, c) for p, c in rest],
                          stroke_width=s.width, stroke=stroke, fill=s.fill,
                          cap=s.cap, join=s.join, miter_limit=s.miter_limit, dash=s.dash, dash_offset=s.dash_offset,
                          fill_rule=None if s.fill_rule == scene_rule else s.fill_rule,
                          fill_opacity=s.fill_opacity, stroke_opacity=s.stroke_opacity))
    return Scene.from_paths(paths, width=width, height=height, background=background or None,
                            fill_rule=scene_rule, device=device, dtype=dtype, groups=groups or None)
