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


@dataclass(frozen=True)
class Topology:
    """What every scene in a batch shares: per path, its number of cubic segments, whether it is closed, and
    whether it is filled (only paths with `filled=True` get a fill layer, and only if the scene has fill colours)."""

    num_segments: tuple[int, ...]
    closed: tuple[bool, ...]
    filled: tuple[bool, ...] | None = None  # None: no path is filled

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_segments", tuple(int(n) for n in self.num_segments))
        object.__setattr__(self, "closed", tuple(bool(c) for c in self.closed))
        if self.filled is not None:
            object.__setattr__(self, "filled", tuple(bool(f) for f in self.filled))
        if len(self.num_segments) == 0:
            raise ValueError("`num_segments` must name at least one path, got an empty sequence")
        if any(n < 1 for n in self.num_segments):
            raise ValueError(f"`num_segments` must be >= 1 for every path, got {min(self.num_segments)}")
        if len(self.closed) != len(self.num_segments):
            raise ValueError(f"`closed` must have one flag per path ({len(self.num_segments)}), got {len(self.closed)}")
        if self.filled is not None and len(self.filled) != len(self.num_segments):
            raise ValueError(f"`filled` must have one flag per path ({len(self.num_segments)}), got {len(self.filled)}")

    @property
    def num_paths(self) -> int:
        return len(self.num_segments)

    @property
    def points_per_path(self) -> tuple[int, ...]:
        return tuple(3 * n + (0 if c else 1) for n, c in zip(self.num_segments, self.closed))

    @property
    def num_points(self) -> int:
        return sum(self.points_per_path)

    @property
    def point_offsets(self) -> tuple[int, ...]:
        """Index of each path's first point in `Scene.points`."""
        out, acc = [], 0
        for n in self.points_per_path:
            out.append(acc)
            acc += n
        return tuple(out)


@functools.lru_cache(maxsize=64)
def topology_tensors(topology: Topology, device: torch.device) -> dict[str, torch.Tensor]:
    """Index tensors derived from a topology, cached so the hot path never loops over paths in Python."""
    nseg = torch.tensor(topology.num_segments, dtype=torch.long)
    closed = torch.tensor(topology.closed, dtype=torch.bool)
    num_paths = nseg.numel()
    seg_path = torch.repeat_interleave(torch.arange(num_paths), nseg)  # (S,)
    seg_start = torch.cumsum(nseg, 0) - nseg  # (P,) first segment of each path
    per_path = 3 * nseg + (~closed).long()
    point_start = torch.cumsum(per_path, 0) - per_path  # (P,)
    k = torch.arange(seg_path.numel()) - seg_start[seg_path]  # segment index within its path
    ctrl = point_start[seg_path, None] + 3 * k[:, None] + torch.arange(4)  # (S, 4) point indices
    wraps = closed[seg_path] & (k == nseg[seg_path] - 1)
    ctrl[wraps, 3] = point_start[seg_path[wraps]]
    filled = torch.zeros(num_paths, dtype=torch.bool) if topology.filled is None else torch.tensor(topology.filled)
    return {
        "seg_ctrl": ctrl.to(device),
        "seg_path": seg_path.to(device),
        "num_segments": nseg.to(device),
        "filled_paths": torch.nonzero(filled).flatten().to(device),
    }


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
class Path:
    """One path for `Scene.from_paths`, in plain Python numbers (pixel coordinates, colours RGBA in [0, 1]).

    `points` holds the start point and then each segment's control points and end point; `degrees` gives each
    segment's degree (1 line, 2 quadratic, 3 cubic; an int means all segments). A closed path omits its final
    point, which is the first one. `fill=None` means unfilled.
    """

    points: Sequence[Sequence[float]]
    degrees: int | Sequence[int] = 3
    closed: bool = False
    stroke_width: float = 1.0
    stroke: Sequence[float] = (0.0, 0.0, 0.0, 1.0)
    fill: Sequence[float] | None = None

    def cubic_points(self) -> tuple[list[list[float]], int]:
        """The path as cubic control points in the `Scene` layout, and its number of segments."""
        pts = [[float(x), float(y)] for x, y in self.points]
        n = len(pts)
        if isinstance(self.degrees, int):
            per = self.degrees
            if per not in (1, 2, 3):
                raise ValueError(f"`degrees` must be 1, 2 or 3, got {per}")
            body = n if self.closed else n - 1
            if body < 1 or body % per:
                raise ValueError(f"`points` must hold {'k' if self.closed else '1 + k'}*{per} points for a "
                                 f"{'closed' if self.closed else 'open'} path of degree {per}, got {n}")
            degrees = [per] * (body // per)
        else:
            degrees = [int(d) for d in self.degrees]
        need = sum(degrees) + (0 if self.closed else 1)
        if not degrees or n != need:
            raise ValueError(f"`points` must hold {need} points for degrees {degrees} "
                             f"({'closed' if self.closed else 'open'}), got {n}")
        ring = pts + [pts[0]] if self.closed else pts
        out, i = [ring[0]], 0
        for d in degrees:
            out.extend(_elevate(ring[i:i + d + 1], d)[1:])
            i += d
        if self.closed:
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
    as CLIPDraw does). `background` is RGB or RGBA in [0, 1], or None for transparent.
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

    def tensors(self) -> list[torch.Tensor]:
        """The optimisable tensors (points, widths, stroke colours, fill colours if any)."""
        out = [self.points, self.widths, self.stroke_colors]
        return out + ([self.fill_colors] if self.fill_colors is not None else [])

    def _map(self, fn) -> "Scene":
        return replace(self, points=fn(self.points), widths=fn(self.widths), stroke_colors=fn(self.stroke_colors),
                       fill_colors=None if self.fill_colors is None else fn(self.fill_colors))

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
        return self._map(lambda x: x[index:index + 1])

    def repeat(self, batch_size: int) -> "Scene":
        """A batch of `batch_size` copies of a one-scene batch (new leaf tensors)."""
        if self.batch_size != 1 or batch_size < 1:
            raise ValueError(f"`repeat` needs a one-scene batch and `batch_size` >= 1, got B={self.batch_size}, "
                             f"batch_size={batch_size}")
        return self._map(lambda x: x.detach().repeat(batch_size, *([1] * (x.dim() - 1))))

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_paths(cls, paths: Sequence[Path], width: int = 224, height: int = 224,
                   background: Sequence[float] | None = (1.0, 1.0, 1.0, 1.0), fill_rule: str = "nonzero",
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> "Scene":
        """A one-scene batch from `Path` descriptions (lines and quadratics are elevated to cubics)."""
        if len(paths) == 0:
            raise ValueError("`paths` must hold at least one Path, got none")
        pts, nseg, closed, widths, strokes, fills = [], [], [], [], [], []
        any_fill = any(p.fill is not None for p in paths)
        for i, p in enumerate(paths):
            if not isinstance(p, Path):
                raise ValueError(f"`paths[{i}]` must be a Path, got {type(p).__name__}")
            cp, n = p.cubic_points()
            pts.extend(cp)
            nseg.append(n)
            closed.append(p.closed)
            widths.append(float(p.stroke_width))
            strokes.append(_rgba(p.stroke, f"paths[{i}].stroke"))
            fills.append(_rgba(p.fill, f"paths[{i}].fill") or (0.0, 0.0, 0.0, 0.0))
        topo = Topology(tuple(nseg), tuple(closed), tuple(p.fill is not None for p in paths) if any_fill else None)
        kw = {"device": device, "dtype": dtype}
        return cls(topo, torch.tensor([pts], **kw), torch.tensor([widths], **kw), torch.tensor([strokes], **kw),
                   torch.tensor([fills], **kw) if any_fill else None, width=width, height=height,
                   background=background, fill_rule=fill_rule)

    @classmethod
    def stack(cls, scenes: Sequence["Scene"]) -> "Scene":
        """Concatenate scenes of one topology, canvas and background along the batch dimension."""
        if not scenes:
            raise ValueError("`scenes` must hold at least one Scene, got none")
        first = scenes[0]
        for i, s in enumerate(scenes):
            same = (s.topology, s.width, s.height, s.background, s.fill_rule, s.fill_colors is None)
            if same != (first.topology, first.width, first.height, first.background, first.fill_rule,
                        first.fill_colors is None):
                raise ValueError(f"`scenes[{i}]` differs from `scenes[0]` in topology, canvas, background, fill "
                                 "rule or fills; only scenes of one topology can be batched")
        cat = lambda name: torch.cat([getattr(s, name) for s in scenes])  # noqa: E731
        return replace(first, points=cat("points"), widths=cat("widths"), stroke_colors=cat("stroke_colors"),
                       fill_colors=None if first.fill_colors is None else cat("fill_colors"))
