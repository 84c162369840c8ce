"""Synthetic detection scenes and videos for the demo CLIP: several coloured shapes at known boxes.

The detection tests and benchmarks (`pipelines/lens_detect.py`) and the video tests (`pipelines/lens_video.py`)
need pictures whose truth is known without a model: `make_scene(seed)` draws 3-5 shapes of different colours,
drawn the way the demo CLIP's training images are drawn (`studio.demo.shapes`), with no two shapes overlapping,
and returns each one's pixel box. Everything is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from studio.demo.shapes import COLOUR_NAMES, SHAPES, SUPERSAMPLE, DrawnObject, _draw, _jitter_colour


@dataclass(frozen=True)
class SceneObject:
    kind: str
    colour: str
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the scene image

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    objects: tuple[SceneObject, ...]

    def find(self, colour: str, kind: str) -> SceneObject | None:
        return next((o for o in self.objects if o.colour == colour and o.kind == kind), None)


def _box(obj: DrawnObject, side: int) -> tuple[float, float, float, float]:
    """The pixel box of a drawn shape: the extent of its polygon (a circle's disc)."""
    from studio.demo.shapes import _polygon

    cx, cy, r = obj.centre[0], obj.centre[1], obj.radius
    if obj.kind == "circle":
        pts = [(cx - r, cy - r), (cx + r, cy + r)]
    else:
        pts = _polygon(obj.kind, cx, cy, r, obj.rotation)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs) * side, min(ys) * side, max(xs) * side, max(ys) * side)


def make_scene(seed: int, size: int = 256, num_objects: tuple[int, int] = (3, 5),
               must_have: tuple[str, str] | None = ("blue", "square"), background: tuple[int, int, int] = (255,) * 3,
               radius: tuple[float, float] = (0.07, 0.12)) -> Scene:
    """A `size`² scene of n ∈ `num_objects` filled shapes, each of its own colour, none overlapping; `must_have`
    (colour, kind) is always one of them. Radii are fractions of the side."""
    rng = np.random.default_rng(int(seed))
    n = int(rng.integers(num_objects[0], num_objects[1] + 1))
    colours = [c for c in COLOUR_NAMES if must_have is None or c != must_have[0]]
    rng.shuffle(colours)
    specs = ([must_have] if must_have else []) + [(c, SHAPES[rng.integers(len(SHAPES))]) for c in colours]
    specs = specs[:n]
    placed: list[DrawnObject] = []
    for colour, kind in specs:
        for _ in range(200):  # rejection sampling of a free spot
            r = float(rng.uniform(*radius))
            x, y = rng.uniform(r + 0.02, 0.98 - r, size=2)
            if all((x - o.centre[0]) ** 2 + (y - o.centre[1]) ** 2 > (r + o.radius + 0.04) ** 2 for o in placed):
                break
        else:
            continue
        rot = float(rng.uniform(-0.35, 0.35)) if kind != "circle" else 0.0
        placed.append(DrawnObject(kind, colour, "centre", "small", "filled", (float(x), float(y)), r, rot, 2.0,
                                  _jitter_colour(rng, colour)))
    side = size * SUPERSAMPLE
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    for o in placed:
        _draw(draw, o, rng, side)
    objects = tuple(SceneObject(o.kind, o.colour, _box(o, size)) for o in placed)
    return Scene(img.reduce(SUPERSAMPLE), objects)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Appearance:
    """A shape on screen from `start_s` to `end_s` (seconds), centred at `centre` (unit coordinates)."""

    colour: str
    kind: str
    start_s: float
    end_s: float
    centre: tuple[float, float] = (0.5, 0.5)
    radius: float = 0.2


def write_shapes_video(path, appearances: list[Appearance], duration_s: float, fps: float = 10.0,
                       size: tuple[int, int] = (160, 120), background: tuple[int, int, int] = (255,) * 3):
    """An H.264 MP4 of `duration_s` seconds: a plain background on which each appearance's shape is drawn while
    it is on screen (radius a fraction of the shorter side). Returns the path."""
    import imageio.v2 as imageio

    w, h = size
    side = min(w, h)
    rng = np.random.default_rng(0)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1) as out:
        for i in range(int(round(duration_s * fps))):
            t = i / fps
            img = Image.new("RGB", (w * SUPERSAMPLE, h * SUPERSAMPLE), background)
            draw = ImageDraw.Draw(img)
            for a in appearances:
                if a.start_s <= t < a.end_s:
                    # _draw's unit is the shorter side, so the centre is given in units of it
                    centre = (a.centre[0] * w / side, a.centre[1] * h / side)
                    rgb = _jitter_colour(np.random.default_rng(COLOUR_NAMES.index(a.colour)), a.colour)
                    obj = DrawnObject(a.kind, a.colour, "centre", "large", "filled", centre, a.radius, 0.0, 2.0, rgb)
                    _draw(draw, obj, rng, side * SUPERSAMPLE)
            del draw
            out.append_data(np.asarray(img.reduce(SUPERSAMPLE)))
    return path
