"""The scene model: paths of cubic Bézier segments with tensor parameters, batched over scenes of one topology.

Point layout follows diffvg (Li et al. 2020, "Differentiable Vector Graphics Rasterization for Editing and
Learning", `pydiffvg.Path`): a path of `n` cubic segments has `3n + 1` points when open and `3n` when closed (the
last segment ends on the path's first point). Lines and quadratics are degree-elevated to cubics on input
(`Path`), which draws the same curve and keeps one code path for rendering and gradients.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

MAX_CANVAS = 8192  # pixels per side; larger canvases are refused rather than allocating gigabytes
FILL_RULES = ("nonzero", "evenodd")
CAPS = ("butt", "round", "square")
JOINS = ("miter", "round", "bevel")
SPREADS = ("pad", "reflect", "repeat")
GRADIENT_KINDS = ("linear", "radial")
MAX_DASHES = 64  # entries of one dash pattern


@dataclass(frozen=True)
class PathStyle:
    """How one path is stroked and filled: constants shared by every scene of a batch (part of the `Topology`).

    cap          "butt" | "round" | "square"   (SVG `stroke-linecap`; applies at the open ends of every subpath and
                                                of every dash)
    join         "miter" | "round" | "bevel"   (SVG `stroke-linejoin`, at the corners between segments)
    miter_limit  >= 1                          (SVG `stroke-miterlimit`: a miter longer than miter_limit x width
                                                becomes a bevel)
    dash         lengths in pixels, alternately on and off; () = solid. An odd count is repeated once (SVG);
                 a pattern summing to 0 is solid. The pattern restarts on every subpath.
    dash_offset  pixels into the pattern where each subpath starts (SVG `stroke-dashoffset`; may be negative)
    fill_rule    "nonzero" | "evenodd" | None  (None: the scene's `fill_rule`)
    fill_paint, stroke_paint
                 None: the path's `fill_colors` / `stroke_colors` row; an int k: `scene.gradients[k]`, whose colour
                 is then multiplied by the alpha of that row (fill-opacity / stroke-opacity); the row's RGB is
                 unused.

    The default (round caps and joins, solid) is what CLIPDraw and CLIPasso draw (the papers' look, and the
    renderer's fast path); SVG's own defaults are butt caps and miter joins, which `from_svg` sets when a
    document does not say otherwise (`PathStyle.svg_default()`).
    """

    cap: str = "round"
    join: str = "round"
    miter_limit: float = 4.0
    dash: tuple[float, ...] = ()
    dash_offset: float = 0.0
    fill_rule: str | None = None
    fill_paint: int | None = None
    stroke_paint: int | None = None

    def __post_init__(self) -> None:
        if self.cap not in CAPS:
            raise ValueError(f"`cap` must be one of {CAPS}, got {self.cap!r}")
        if self.join not in JOINS:
            raise ValueError(f"`join` must be one of {JOINS}, got {self.join!r}")
        ml = float(self.miter_limit)
        if not (math.isfinite(ml) and ml >= 1):
            raise ValueError(f"`miter_limit` must be a finite number >= 1, got {self.miter_limit!r}")
        object.__setattr__(self, "miter_limit", ml)
        dash = tuple(float(d) for d in self.dash)
        if any(not math.isfinite(d) or d < 0 for d in dash):
            raise ValueError(f"`dash` lengths must be finite and >= 0, got {self.dash!r}")
        if len(dash) % 2:
            dash = dash * 2
        if len(dash) > MAX_DASHES:
            raise ValueError(f"`dash` may hold at most {MAX_DASHES} lengths, got {len(dash)}")
        if dash and sum(dash) <= 0:
            dash = ()
        object.__setattr__(self, "dash", dash)
        off = float(self.dash_offset)
        if not math.isfinite(off):
            raise ValueError(f"`dash_offset` must be finite, got {self.dash_offset!r}")
        object.__setattr__(self, "dash_offset", off)
        if self.fill_rule is not None and self.fill_rule not in FILL_RULES:
            raise ValueError(f"`fill_rule` must be one of {FILL_RULES} or None, got {self.fill_rule!r}")
        for name in ("fill_paint", "stroke_paint"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"`{name}` must be None or a gradient index >= 0, got {v!r}")

    @classmethod
    def svg_default(cls, **kw) -> "PathStyle":
        """SVG's initial values: butt caps, miter joins, miter limit 4, solid."""
        return cls(**{"cap": "butt", "join": "miter", **kw})

    @property
    def round_solid(self) -> bool:
        """Round caps and joins, no dashes: the distance-only stroke (the fast path)."""
        return self.cap == "round" and self.join == "round" and not self.dash


DEFAULT_STYLE = PathStyle()


@dataclass(frozen=True)
class Topology:
    """What every scene in a batch shares: the subpaths of each path, open/closed, filled, and each path's style.

    `num_segments` and `closed` are per SUBPATH (contour), in order; `subpaths[p]` is how many consecutive subpaths
    path `p` owns (None: one each, so a subpath is a path). A path with several subpaths is ONE shape: one fill
    (holes cut by its fill rule, winding summed over all its subpaths), one stroke (each subpath with its own caps
    and dash pattern), one colour. `filled` is per path (only paths with `filled=True` get a fill layer, and only
    if the scene has fill colours). `styles` is one `PathStyle` per path (None: all `PathStyle()`, round and solid).
    `groups` are (first path, end path, opacity) ranges, nested or disjoint: each is drawn on its own transparent
    layer and composited with its opacity as one layer (SVG group opacity), not multiplied into its paths. A fourth
    entry `clip` = (x0, y0, x1, y1) in canvas pixels clips the layer to that axis-aligned rectangle (box-filtered
    coverage mask; a nested `<svg>` viewport's overflow clip); without it (or None) nothing is clipped.
    """

    num_segments: tuple[int, ...]
    closed: tuple[bool, ...]
    filled: tuple[bool, ...] | None = None  # None: no path is filled
    subpaths: tuple[int, ...] | None = None  # None: one subpath per path
    styles: tuple[PathStyle, ...] | None = None  # None: PathStyle() for every path
    groups: tuple[tuple, ...] | None = None  # (first path, end path, opacity[, clip rect]): one layer each

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_segments", tuple(int(n) for n in self.num_segments))
        object.__setattr__(self, "closed", tuple(bool(c) for c in self.closed))
        if self.filled is not None:
            object.__setattr__(self, "filled", tuple(bool(f) for f in self.filled))
        if len(self.num_segments) == 0:
            raise ValueError("`num_segments` must name at least one path, got an empty sequence")
        if any(n < 1 for n in self.num_segments):
            raise ValueError(f"`num_segments` must be >= 1 for every subpath, got {min(self.num_segments)}")
        if len(self.closed) != len(self.num_segments):
            raise ValueError(f"`closed` must have one flag per subpath ({len(self.num_segments)}), got "
                             f"{len(self.closed)}")
        if self.subpaths is not None:
            sub = tuple(int(n) for n in self.subpaths)
            if not sub or any(n < 1 for n in sub) or sum(sub) != len(self.num_segments):
                raise ValueError(f"`subpaths` must be counts >= 1 summing to the number of subpaths "
                                 f"({len(self.num_segments)}), got {self.subpaths!r}")
            object.__setattr__(self, "subpaths", None if all(n == 1 for n in sub) else sub)
        p = self.num_paths
        if self.filled is not None and len(self.filled) != p:
            raise ValueError(f"`filled` must have one flag per path ({p}), got {len(self.filled)}")
        if self.styles is not None:
            styles = tuple(self.styles)
            if len(styles) != p or not all(isinstance(s, PathStyle) for s in styles):
                raise ValueError(f"`styles` must be {p} PathStyle objects (one per path), got {len(styles)}")
            object.__setattr__(self, "styles", None if all(s == DEFAULT_STYLE for s in styles) else styles)
        if self.groups is not None:
            groups = []
            for g in self.groups:
                try:
                    a, b, op = int(g[0]), int(g[1]), float(g[2])
                    clip = None if len(g) < 4 or g[3] is None else tuple(float(v) for v in g[3])
                    if len(g) > 4 or (clip is not None and len(clip) != 4):
                        raise ValueError
                except (TypeError, ValueError, IndexError):
                    raise ValueError(f"`groups` must hold (first path, end path, opacity[, clip]) entries with clip "
                                     f"None or (x0, y0, x1, y1), got {g!r}") from None
                if not (0 <= a < b <= p) or not (math.isfinite(op) and 0 <= op <= 1):
                    raise ValueError(f"`groups` entry {g!r} must have 0 <= first < end <= {p} and opacity in [0, 1]")
                if clip is not None and not (all(math.isfinite(v) for v in clip) and clip[0] <= clip[2]
                                             and clip[1] <= clip[3]):
                    raise ValueError(f"`groups` entry {g!r}: clip must be finite (x0, y0, x1, y1) with x0 <= x1 and "
                                     "y0 <= y1")
                groups.append((a, b, op) if clip is None else (a, b, op, clip))
            groups.sort(key=lambda g: (g[0], -g[1]))
            stack: list[tuple] = []
            for g in groups:  # properly nested or disjoint, as SVG's <g> elements are
                while stack and stack[-1][1] <= g[0]:
                    stack.pop()
                if stack and g[1] > stack[-1][1]:
                    raise ValueError(f"`groups` {stack[-1]!r} and {g!r} overlap without nesting")
                stack.append(g)
            object.__setattr__(self, "groups", tuple(groups) or None)

    # -- per path ------------------------------------------------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return len(self.num_segments) if self.subpaths is None else len(self.subpaths)

    def style(self, p: int) -> PathStyle:
        return DEFAULT_STYLE if self.styles is None else self.styles[p]

    @property
    def all_styles(self) -> tuple[PathStyle, ...]:
        return self.styles if self.styles is not None else (DEFAULT_STYLE,) * self.num_paths

    @property
    def round_solid(self) -> bool:
        """Every path has round caps and joins and no dashes (the renderer takes its distance-only fast path)."""
        return self.styles is None or all(s.round_solid for s in self.styles)

    @property
    def subpath_counts(self) -> tuple[int, ...]:
        return self.subpaths if self.subpaths is not None else (1,) * self.num_paths

    @property
    def points_per_path(self) -> tuple[int, ...]:
        out, k = [], 0
        per = self.points_per_subpath
        for n in self.subpath_counts:
            out.append(sum(per[k:k + n]))
            k += n
        return tuple(out)

    @property
    def num_points(self) -> int:
        return sum(self.points_per_subpath)

    @property
    def point_offsets(self) -> tuple[int, ...]:
        """Index of each path's first point in `Scene.points`."""
        return tuple(_offsets(self.points_per_path))

    # -- per subpath ---------------------------------------------------------------------------------------------
    @property
    def num_subpaths(self) -> int:
        return len(self.num_segments)

    @property
    def subpath_path(self) -> tuple[int, ...]:
        """The path each subpath belongs to."""
        return tuple(p for p, n in enumerate(self.subpath_counts) for _ in range(n))

    @property
    def points_per_subpath(self) -> tuple[int, ...]:
        return tuple(3 * n + (0 if c else 1) for n, c in zip(self.num_segments, self.closed))

    @property
    def subpath_offsets(self) -> tuple[int, ...]:
        """Index of each subpath's first point in `Scene.points`."""
        return tuple(_offsets(self.points_per_subpath))

    def select_paths(self, start: int, stop: int) -> "Topology":
        """The topology of paths [start, stop) (groups inside the range kept, shifted; the others dropped)."""
        counts = self.subpath_counts
        c0, c1 = sum(counts[:start]), sum(counts[:stop])
        groups = tuple((g[0] - start, g[1] - start, *g[2:]) for g in (self.groups or ())
                       if start <= g[0] and g[1] <= stop)
        return Topology(self.num_segments[c0:c1], self.closed[c0:c1],
                        None if self.filled is None else self.filled[start:stop], counts[start:stop],
                        None if self.styles is None else self.styles[start:stop], groups or None)

    def concat(self, other: "Topology") -> "Topology":
        """This topology's paths followed by `other`'s (for appending paths to a scene)."""
        filled = None
        if self.filled is not None or other.filled is not None:
            filled = (self.filled or (False,) * self.num_paths) + (other.filled or (False,) * other.num_paths)
        styles = None
        if self.styles is not None or other.styles is not None:
            styles = self.all_styles + other.all_styles
        n = self.num_paths
        groups = (self.groups or ()) + tuple((g[0] + n, g[1] + n, *g[2:]) for g in (other.groups or ()))
        return Topology(self.num_segments + other.num_segments, self.closed + other.closed, filled,
                        self.subpath_counts + other.subpath_counts, styles, groups or None)


def _offsets(counts) -> list[int]:
    out, acc = [], 0
    for n in counts:
        out.append(acc)
        acc += n
    return out


@functools.lru_cache(maxsize=64)
def topology_tensors(topology: Topology, device: torch.device) -> dict[str, torch.Tensor]:
    """Index tensors derived from a topology, cached so the hot path never loops over paths in Python.

    seg_ctrl (S, 4) point indices of each cubic; seg_sub (S,) its subpath; num_segments (C,) per subpath;
    sub_path (C,) the path of each subpath; closed (C,); filled_paths (F,) indices of filled paths."""
    nseg = torch.tensor(topology.num_segments, dtype=torch.long)
    closed = torch.tensor(topology.closed, dtype=torch.bool)
    num_sub = nseg.numel()
    seg_sub = torch.repeat_interleave(torch.arange(num_sub), nseg)  # (S,)
    seg_start = torch.cumsum(nseg, 0) - nseg  # (C,) first segment of each subpath
    per_sub = 3 * nseg + (~closed).long()
    point_start = torch.cumsum(per_sub, 0) - per_sub  # (C,)
    k = torch.arange(seg_sub.numel()) - seg_start[seg_sub]  # segment index within its subpath
    ctrl = point_start[seg_sub, None] + 3 * k[:, None] + torch.arange(4)  # (S, 4) point indices
    wraps = closed[seg_sub] & (k == nseg[seg_sub] - 1)
    ctrl[wraps, 3] = point_start[seg_sub[wraps]]
    num_paths = topology.num_paths
    filled = torch.zeros(num_paths, dtype=torch.bool) if topology.filled is None else torch.tensor(topology.filled)
    return {
        "seg_ctrl": ctrl.to(device),
        "seg_sub": seg_sub.to(device),
        "num_segments": nseg.to(device),
        "sub_path": torch.tensor(topology.subpath_path, dtype=torch.long).to(device),
        "closed": closed.to(device),
        "filled_paths": torch.nonzero(filled).flatten().to(device),
    }


@dataclass
class Gradient:
    """A linear or radial gradient paint, batched like the scene (leading dimension B); optimise its tensors.

    kind       "linear" | "radial"
    offsets    (B, S)    stop offsets in [0, 1], non-decreasing (rendered clamped to the previous stop, as SVG does)
    colors     (B, S, 4) straight RGBA of the stops (stop-color with stop-opacity as alpha)
    geometry   (B, 4) linear: x1, y1, x2, y2; (B, 6) radial: cx, cy, r, fx, fy, fr — in GRADIENT space
    transform  (B, 2, 3) gradient space -> canvas pixels, [[a, c, e], [b, d, f]] in SVG's matrix(a b c d e f) order
               (the importer folds the element's CTM, objectBoundingBox units and gradientTransform into it)
    spread     "pad" | "reflect" | "repeat"

    Colours are interpolated in straight (not premultiplied) sRGB between stops, evaluated at pixel centres.
    Differentiable w.r.t. offsets, colors, geometry and transform. A radial gradient whose focal circle is not
    inside the end circle draws SVG 2's cone (the larger root of the two-circle equation, where its radius >= 0).
    """

    kind: str
    offsets: torch.Tensor
    colors: torch.Tensor
    geometry: torch.Tensor
    transform: torch.Tensor
    spread: str = "pad"

    def __post_init__(self) -> None:
        if self.kind not in GRADIENT_KINDS:
            raise ValueError(f"gradient `kind` must be one of {GRADIENT_KINDS}, got {self.kind!r}")
        if self.spread not in SPREADS:
            raise ValueError(f"gradient `spread` must be one of {SPREADS}, got {self.spread!r}")
        if not torch.is_tensor(self.offsets) or self.offsets.dim() != 2 or self.offsets.shape[1] < 1:
            raise ValueError(f"gradient `offsets` must be a (B, S) tensor with S >= 1, got {_shape(self.offsets)}")
        b, s = self.offsets.shape
        ng = 4 if self.kind == "linear" else 6
        for name, shape in (("colors", (b, s, 4)), ("geometry", (b, ng)), ("transform", (b, 2, 3))):
            v = getattr(self, name)
            if not torch.is_tensor(v) or tuple(v.shape) != shape:
                raise ValueError(f"gradient `{name}` must be a tensor of shape {shape}, got {_shape(v)}")
            if v.device != self.offsets.device:
                raise ValueError(f"gradient `{name}` is on {v.device} but `offsets` is on {self.offsets.device}")

    @classmethod
    def make(cls, kind: str, stops: Sequence[tuple[float, Sequence[float]]], geometry: Sequence[float],
             transform: Sequence[float] = (1, 0, 0, 1, 0, 0), spread: str = "pad", device=None,
             dtype: torch.dtype = torch.float32) -> "Gradient":
        """A one-scene gradient from plain numbers: stops [(offset, RGB[A])], geometry, transform (a b c d e f)."""
        if not stops:
            raise ValueError("gradient `stops` must hold at least one (offset, colour), got none")
        kw = {"device": device, "dtype": dtype}
        offs = torch.tensor([[float(o) for o, _ in stops]], **kw)
        cols = torch.tensor([[_rgba(c, "gradient stop colour") for _, c in stops]], **kw)
        a, b, c, d, e, f = (float(v) for v in transform)
        return cls(kind, offs, cols, torch.tensor([[float(v) for v in geometry]], **kw),
                   torch.tensor([[[a, c, e], [b, d, f]]], **kw), spread)

    @property
    def batch_size(self) -> int:
        return self.offsets.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [self.offsets, self.colors, self.geometry, self.transform]

    def map(self, fn) -> "Gradient":
        return replace(self, offsets=fn(self.offsets), colors=fn(self.colors), geometry=fn(self.geometry),
                       transform=fn(self.transform))

    def signature(self) -> tuple:
        return (self.kind, self.spread, self.offsets.shape[1])


def _shape(v) -> object:
    return tuple(v.shape) if torch.is_tensor(v) else type(v).__name__


def _elevate(p: list[list[float]], degree: int) -> list[list[float]]:
    """Control points of one segment (degree+1 points) as the 4 control points of the same cubic."""
    if degree == 3:
        return p
    if degree == 1:
        (x0, y0), (x1, y1) = p
        return [p[0], [x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3], [x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3], p[1]]
    if degree == 2:
        (x0, y0), (x1, y1), (x2, y2) = p
        c1 = [x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3]
        c2 = [x2 + 2 * (x1 - x2) / 3, y2 + 2 * (y1 - y2) / 3]
        return [p[0], c1, c2, p[2]]
    raise ValueError(f"segment `degree` must be 1 (line), 2 (quadratic) or 3 (cubic), got {degree}")


@dataclass
class Subpath:
    """A further subpath of a `Path` (same conventions as `Path.points` / `degrees` / `closed`)."""

    points: Sequence[Sequence[float]]
    degrees: int | Sequence[int] = 3
    closed: bool = False


@dataclass
class Path:
    """One path for `Scene.from_paths`, in plain Python numbers (pixel coordinates, colours RGBA in [0, 1]).

    `points` holds the start point and then each segment's control points and end point; `degrees` gives each
    segment's degree (1 line, 2 quadratic, 3 cubic; an int means all segments). A closed path omits its final
    point, which is the first one. `subpaths` are further `Subpath`s of the same shape (holes, letters' counters):
    one fill, one stroke. `fill=None` means unfilled. `fill` and `stroke` may be a one-scene `Gradient` instead of
    a colour (`fill_opacity` / `stroke_opacity` then multiply it). The remaining fields are the `PathStyle`.
    """

    points: Sequence[Sequence[float]]
    degrees: int | Sequence[int] = 3
    closed: bool = False
    stroke_width: float = 1.0
    stroke: "Sequence[float] | Gradient" = (0.0, 0.0, 0.0, 1.0)
    fill: "Sequence[float] | Gradient | None" = None
    subpaths: Sequence[Subpath] = ()
    cap: str = "round"
    join: str = "round"
    miter_limit: float = 4.0
    dash: Sequence[float] = ()
    dash_offset: float = 0.0
    fill_rule: str | None = None
    fill_opacity: float = 1.0
    stroke_opacity: float = 1.0

    def cubic_points(self) -> tuple[list, int]:
        """The first subpath as cubic control points in the `Scene` layout, and its number of segments."""
        return _cubic_points(self.points, self.degrees, self.closed)

    def all_subpaths(self) -> list[tuple[list, int, bool]]:
        """Every subpath as (cubic control points, number of segments, closed)."""
        out = [(*self.cubic_points(), bool(self.closed))]
        for i, sp in enumerate(self.subpaths):
            if not isinstance(sp, Subpath):
                raise ValueError(f"`subpaths[{i}]` must be a Subpath, got {type(sp).__name__}")
            out.append((*_cubic_points(sp.points, sp.degrees, sp.closed), bool(sp.closed)))
        return out


def _cubic_points(points, degrees, closed) -> tuple[list, int]:
    pts = [(float(x), float(y)) for x, y in points]
    n = len(pts)
    if isinstance(degrees, int):
        per = degrees
        if per not in (1, 2, 3):
            raise ValueError(f"`degrees` must be 1, 2 or 3, got {per}")
        body = n if closed else n - 1
        if body < 1 or body % per:
            raise ValueError(f"`points` must hold {'k' if closed else '1 + k'}*{per} points for a "
                             f"{'closed' if closed else 'open'} path of degree {per}, got {n}")
        if per == 3:  # already the Scene layout
            return pts, body // 3
        degrees = [per] * (body // per)
    else:
        degrees = [int(d) for d in degrees]
    need = sum(degrees) + (0 if closed else 1)
    if not degrees or n != need:
        raise ValueError(f"`points` must hold {need} points for degrees {degrees} "
                         f"({'closed' if closed else 'open'}), got {n}")
    ring = pts + [pts[0]] if closed else pts
    out, i = [ring[0]], 0
    for d in degrees:
        out.extend(_elevate(ring[i:i + d + 1], d)[1:])
        i += d
    if closed:
        out = out[:-1]
    return out, len(degrees)


def _rgba(value: Sequence[float] | None, name: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    v = [float(x) for x in value]
    if len(v) == 3:
        v.append(1.0)
    if len(v) != 4 or not all(math.isfinite(x) for x in v):
        raise ValueError(f"`{name}` must be 3 or 4 finite numbers (RGB[A] in [0, 1]), got {value!r}")
    return tuple(v)  # type: ignore[return-value]


@dataclass
class Scene:
    """A batch of `B` vector scenes that share one `Topology`, with tensor parameters to optimise.

    Shapes: `points (B, num_points, 2)` in pixel coordinates (x right, y down, pixel (i, j) covers [i, i+1]x[j, j+1]);
    `widths (B, P)` stroke widths in pixels; `stroke_colors (B, P, 4)` and `fill_colors (B, P, 4)` straight
    (not premultiplied) RGBA. Colours outside [0, 1] are rendered as given (pipelines clamp after each step,
    as CLIPDraw does). `background` is RGB or RGBA in [0, 1], or None for transparent. `fill_rule` is the rule of
    paths whose `PathStyle.fill_rule` is None. `gradients` are the gradient paints the styles' `fill_paint` /
    `stroke_paint` indices name (each batched with the same B). `dash_offsets (B, P)`, when given, replaces every
    path's `PathStyle.dash_offset` (pixels) with a tensor, so the dash offset can be optimised
    (`scene.with_dash_offsets()` makes it from the styles); None: the styles' constants.
    """

    topology: Topology
    points: torch.Tensor
    widths: torch.Tensor
    stroke_colors: torch.Tensor
    fill_colors: torch.Tensor | None = None
    width: int = 224
    height: int = 224
    background: tuple[float, float, float, float] | None = (1.0, 1.0, 1.0, 1.0)
    fill_rule: str = "nonzero"
    gradients: tuple[Gradient, ...] = ()
    dash_offsets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        t = self.topology
        if not isinstance(t, Topology):
            raise ValueError(f"`topology` must be a Topology, got {type(t).__name__}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CANVAS:
                raise ValueError(f"`{name}` must be an int in [1, {MAX_CANVAS}], got {v!r}")
        if self.fill_rule not in FILL_RULES:
            raise ValueError(f"`fill_rule` must be one of {FILL_RULES}, got {self.fill_rule!r}")
        self.background = _rgba(self.background, "background")
        if not torch.is_tensor(self.points) or self.points.dim() != 3 or self.points.shape[1:] != (t.num_points, 2):
            raise ValueError(f"`points` must be a tensor of shape (B, {t.num_points}, 2), got "
                             f"{tuple(self.points.shape) if torch.is_tensor(self.points) else type(self.points)}")
        if not self.points.is_floating_point():
            raise ValueError(f"`points` must be a floating-point tensor, got {self.points.dtype}")
        b, p = self.points.shape[0], t.num_paths
        if b < 1:
            raise ValueError("`points` must hold at least one scene (B >= 1), got B = 0")
        expected = {"widths": (b, p), "stroke_colors": (b, p, 4)}
        if self.fill_colors is not None:
            expected["fill_colors"] = (b, p, 4)
            if t.filled is None:
                raise ValueError("`fill_colors` is given but `topology.filled` is None; set `filled` to say which "
                                 "paths are filled")
        for name, shape in expected.items():
            v = getattr(self, name)
            if not torch.is_tensor(v) or tuple(v.shape) != shape:
                got = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
                raise ValueError(f"`{name}` must be a tensor of shape {shape}, got {got}")
            if v.device != self.points.device:
                raise ValueError(f"`{name}` is on {v.device} but `points` is on {self.points.device}")
        self.gradients = tuple(self.gradients)
        if self.dash_offsets is not None:
            d = self.dash_offsets
            if not torch.is_tensor(d) or tuple(d.shape) != (b, p) or not d.is_floating_point():
                raise ValueError(f"`dash_offsets` must be a floating-point tensor of shape {(b, p)}, got "
                                 f"{tuple(d.shape) if torch.is_tensor(d) else type(d).__name__}")
            if d.device != self.points.device:
                raise ValueError(f"`dash_offsets` is on {d.device} but `points` is on {self.points.device}")
        for i, g in enumerate(self.gradients):
            if not isinstance(g, Gradient):
                raise ValueError(f"`gradients[{i}]` must be a Gradient, got {type(g).__name__}")
            if g.batch_size != b or g.offsets.device != self.points.device:
                raise ValueError(f"`gradients[{i}]` must have batch size {b} on {self.points.device}, got "
                                 f"{g.batch_size} on {g.offsets.device}")
        for p_, st in enumerate(t.all_styles):
            for name in ("fill_paint", "stroke_paint"):
                k = getattr(st, name)
                if k is not None and k >= len(self.gradients):
                    raise ValueError(f"path {p_}'s `{name}` names gradient {k}, but the scene has "
                                     f"{len(self.gradients)}")

    # -- shape helpers -------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.points.shape[0]

    @property
    def num_paths(self) -> int:
        return self.topology.num_paths

    @property
    def device(self) -> torch.device:
        return self.points.device

    def path_fill_rule(self, p: int) -> str:
        """The fill rule path `p` is drawn with (its style's, else the scene's)."""
        return self.topology.style(p).fill_rule or self.fill_rule

    def select_paths(self, start: int, stop: int, background=None) -> "Scene":
        """Paths [start, stop) of every scene as a scene of their own (sharing storage and autograd history; every
        gradient kept, so paint indices stay valid), over `background` (default transparent)."""
        t = self.topology
        p0 = t.point_offsets[start] if start < t.num_paths else t.num_points
        p1 = t.point_offsets[stop] if stop < t.num_paths else t.num_points
        return replace(self, topology=t.select_paths(start, stop), points=self.points[:, p0:p1],
                       widths=self.widths[:, start:stop], stroke_colors=self.stroke_colors[:, start:stop],
                       fill_colors=None if self.fill_colors is None else self.fill_colors[:, start:stop],
                       background=background,
                       dash_offsets=None if self.dash_offsets is None else self.dash_offsets[:, start:stop])

    def tensors(self) -> list[torch.Tensor]:
        """The optimisable tensors: points, widths, stroke colours, fill colours if any, then each gradient's
        offsets, colours, geometry and transform, then the dash offsets if the scene has them as a tensor."""
        out = [self.points, self.widths, self.stroke_colors]
        out += [self.fill_colors] if self.fill_colors is not None else []
        out += [t for g in self.gradients for t in g.tensors()]
        return out + ([self.dash_offsets] if self.dash_offsets is not None else [])

    def with_dash_offsets(self) -> "Scene":
        """This scene with `dash_offsets` as a (B, P) tensor (from the styles' `dash_offset` unless it has one
        already), so an optimiser can move the dash patterns along their paths (`scene.tensors()` lists it)."""
        if self.dash_offsets is not None:
            return self
        offs = torch.tensor([s.dash_offset for s in self.topology.all_styles], device=self.device,
                            dtype=self.points.dtype)
        return replace(self, dash_offsets=offs.expand(self.batch_size, -1).clone())

    def _map(self, fn) -> "Scene":
        return replace(self, points=fn(self.points), widths=fn(self.widths), stroke_colors=fn(self.stroke_colors),
                       fill_colors=None if self.fill_colors is None else fn(self.fill_colors),
                       gradients=tuple(g.map(fn) for g in self.gradients),
                       dash_offsets=None if self.dash_offsets is None else fn(self.dash_offsets))

    def detach(self) -> "Scene":
        return self._map(lambda x: x.detach())

    def clone(self) -> "Scene":
        return self._map(lambda x: x.detach().clone())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Scene":
        return self._map(lambda x: x.to(device=device, dtype=dtype))

    def requires_grad_(self, flag: bool = True) -> "Scene":
        for x in self.tensors():
            x.requires_grad_(flag)
        return self

    def select(self, index: int) -> "Scene":
        """Scene `index` of the batch as a batch of one (sharing storage and autograd history)."""
        if not -self.batch_size <= index < self.batch_size:
            raise ValueError(f"`index` must be in [0, {self.batch_size}), got {index}")
        index = index % self.batch_size
        return self._map(lambda x: x[index:index + 1])

    def repeat(self, batch_size: int) -> "Scene":
        """A batch of `batch_size` copies of a one-scene batch (new leaf tensors)."""
        if self.batch_size != 1 or batch_size < 1:
            raise ValueError(f"`repeat` needs a one-scene batch and `batch_size` >= 1, got B={self.batch_size}, "
                             f"batch_size={batch_size}")
        return self._map(lambda x: x.detach().repeat(batch_size, *([1] * (x.dim() - 1))))

    def resized(self, width: int, height: int) -> "Scene":
        """The scene scaled onto a `width` x `height` canvas: points by (sx, sy), gradient transforms and group clip
        rectangles with them, and lengths (stroke widths, dash patterns and offsets) by the mean factor
        sqrt(sx * sy) (exact for a uniform scale, which is what keeps strokes as drawn). Shares no storage."""
        for name, v in (("width", width), ("height", height)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CANVAS:
                raise ValueError(f"`{name}` must be an int in [1, {MAX_CANVAS}], got {v!r}")
        sx, sy = width / self.width, height / self.height
        k = math.sqrt(sx * sy)
        t = self.topology
        styles = None if t.styles is None else tuple(
            replace(st, dash=tuple(d * k for d in st.dash), dash_offset=st.dash_offset * k) for st in t.styles)
        groups = None if t.groups is None else tuple(
            g if len(g) < 4 or g[3] is None else (g[0], g[1], g[2], (g[3][0] * sx, g[3][1] * sy, g[3][2] * sx,
                                                                     g[3][3] * sy)) for g in t.groups)
        topo = replace(t, styles=styles, groups=groups)
        dev, dt = self.device, self.points.dtype
        scale = torch.tensor([[sx, 0.0], [0.0, sy]], device=dev, dtype=dt)
        grads = tuple(replace(g.map(lambda x: x.detach().clone()), transform=scale.to(g.transform.dtype)
                              @ g.transform.detach()) for g in self.gradients)
        c = self.clone()
        return replace(c, topology=topo, points=c.points * torch.tensor([sx, sy], device=dev, dtype=dt),
                       widths=c.widths * k, width=width, height=height, gradients=grads,
                       dash_offsets=None if c.dash_offsets is None else c.dash_offsets * k)

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_paths(cls, paths: Sequence[Path], width: int = 224, height: int = 224,
                   background: Sequence[float] | None = (1.0, 1.0, 1.0, 1.0), fill_rule: str = "nonzero",
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                   groups: Sequence[tuple] | None = None) -> "Scene":
        """A one-scene batch from `Path` descriptions (lines and quadratics are elevated to cubics). `groups` are
        (first path, end path, opacity[, clip]) ranges composited as one layer each (SVG's `opacity` on a `<g>`),
        clipped to the axis-aligned rectangle clip = (x0, y0, x1, y1) in pixels when given (a viewport's clip)."""
        if len(paths) == 0:
            raise ValueError("`paths` must hold at least one Path, got none")
        pts, nseg, closed, counts, widths, strokes, fills, styles = [], [], [], [], [], [], [], []
        gradients: list[Gradient] = []
        any_fill = any(p.fill is not None for p in paths)

        def paint(value, opacity: float, name: str):
            if isinstance(value, Gradient):
                if value.batch_size != 1:
                    raise ValueError(f"`{name}` must be a one-scene Gradient, got batch size {value.batch_size}")
                gradients.append(value.map(lambda x: x.detach().to(dtype=dtype)))
                return len(gradients) - 1, (0.0, 0.0, 0.0, float(opacity))
            rgba = _rgba(value, name)
            return None, (rgba[:3] + (rgba[3] * float(opacity),)) if rgba is not None else (0.0, 0.0, 0.0, 0.0)

        for i, p in enumerate(paths):
            if not isinstance(p, Path):
                raise ValueError(f"`paths[{i}]` must be a Path, got {type(p).__name__}")
            subs = p.all_subpaths()
            for cp, n, c in subs:
                pts.extend(cp)
                nseg.append(n)
                closed.append(c)
            counts.append(len(subs))
            widths.append(float(p.stroke_width))
            sk, srgba = paint(p.stroke, p.stroke_opacity, f"paths[{i}].stroke")
            fk, frgba = (None, (0.0, 0.0, 0.0, 0.0)) if p.fill is None else \
                paint(p.fill, p.fill_opacity, f"paths[{i}].fill")
            strokes.append(srgba)
            fills.append(frgba)
            styles.append(PathStyle(cap=p.cap, join=p.join, miter_limit=p.miter_limit, dash=tuple(p.dash),
                                    dash_offset=p.dash_offset, fill_rule=p.fill_rule, fill_paint=fk,
                                    stroke_paint=sk))
        topo = Topology(tuple(nseg), tuple(closed), tuple(p.fill is not None for p in paths) if any_fill else None,
                        tuple(counts), tuple(styles), tuple(groups) if groups else None)
        kw = {"device": device, "dtype": dtype}
        return cls(topo, torch.tensor([pts], **kw), torch.tensor([widths], **kw), torch.tensor([strokes], **kw),
                   torch.tensor([fills], **kw) if any_fill else None, width=width, height=height,
                   background=background, fill_rule=fill_rule,
                   gradients=tuple(g.map(lambda x: x.to(device=device)) for g in gradients))

    @classmethod
    def stack(cls, scenes: Sequence["Scene"]) -> "Scene":
        """Concatenate scenes of one topology, canvas and background along the batch dimension."""
        if not scenes:
            raise ValueError("`scenes` must hold at least one Scene, got none")
        first = scenes[0]

        def sig(s):
            return (s.topology, s.width, s.height, s.background, s.fill_rule, s.fill_colors is None,
                    tuple(g.signature() for g in s.gradients), s.dash_offsets is None)

        for i, s in enumerate(scenes):
            if sig(s) != sig(first):
                raise ValueError(f"`scenes[{i}]` differs from `scenes[0]` in topology, canvas, background, fill "
                                 "rule, fills, gradients or dash offsets; only scenes of one topology can be batched")
        cat = lambda get: torch.cat([get(s) for s in scenes])  # noqa: E731
        grads = tuple(replace(g, **{name: cat(lambda s, k=k, name=name: getattr(s.gradients[k], name))
                                    for name in ("offsets", "colors", "geometry", "transform")})
                      for k, g in enumerate(first.gradients))
        return replace(first, points=cat(lambda s: s.points), widths=cat(lambda s: s.widths),
                       stroke_colors=cat(lambda s: s.stroke_colors),
                       fill_colors=None if first.fill_colors is None else cat(lambda s: s.fill_colors),
                       gradients=grads,
                       dash_offsets=None if first.dash_offsets is None else cat(lambda s: s.dash_offsets))
