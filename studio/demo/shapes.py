"""Synthetic captioned drawings of coloured shapes: the training and test data of the bundled demo CLIP.

Each sample is a small RGB image (one or two shapes, or a coloured scribble, on a plain background) with a
caption drawn from varied templates ("a red circle", "a drawing of a small outlined blue star on the left",
"two shapes: a red circle on the left and a green cross on the right"), and the structured scene and caption
query behind them, so a training loss can tell which captions in a batch are true of which image
(`caption_matches`). Everything is a pure function of the seed.

Rendering follows the usual trick for cheap anti-aliasing: draw with PIL `ImageDraw` at `SUPERSAMPLE` times the
size, then box-filter down (`Image.reduce`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Palette of the six named colours (RGB before per-sample jitter).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 25),
    "yellow": (235, 215, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "purple": (140, 55, 185),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Kinds of drawn object: the five shapes plus free-hand scribbles (so colour words also bind to bare strokes).
KINDS: tuple[str, ...] = SHAPES + ("scribble",)
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
    "centre": "in the centre",
}
# Unit-square centre of each position region (x right, y down).
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "left": (0.22, 0.5), "right": (0.78, 0.5), "top": (0.5, 0.22), "bottom": (0.5, 0.78), "centre": (0.5, 0.5),
}
SIZES: tuple[str, ...] = ("small", "large")
FILLS: tuple[str, ...] = ("filled", "outlined")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray") + COLOUR_NAMES
# Caption templates; the first four are `studio.prompts.SHAPES_TEMPLATES`, which zero-shot evaluation uses.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{}", "a {}", "a drawing of a {}", "a picture of a {}", "an image of a {}", "a sketch of a {}",
)

# Every word of the captions the demo CLIP was trained on (the generator below; its model card's "Vocabulary"):
# a prompt's other words it has never seen, and scores arbitrarily.
VOCABULARY: frozenset[str] = frozenset(
    {*COLOUR_NAMES, *KINDS, *POSITIONS, *SIZES, *FILLS, *BACKGROUNDS, "shape", "shapes", "two", "and", "background"}
    | {w for phrase in POSITION_PHRASES.values() for w in phrase.split()}
    | {w for t in CAPTION_TEMPLATES for w in t.replace("{}", " ").split()})


def unknown_words(text: str) -> list[str]:
    """The words of `text` the demo CLIP never saw in training, in order, once each ("a cat on a sofa" -> cat,
    sofa)."""
    words = re.findall(r"[a-z]+", text.lower())
    return list(dict.fromkeys(w for w in words if w not in VOCABULARY))


IMAGE_SIZE = 64  # the demo CLIP's input size (studio/assets/models/shapes-clip.json)
SUPERSAMPLE = 4  # draw at 4x and box-filter down for anti-aliasing

# Attribute columns of the integer scene/query arrays; -1 in a query means "not mentioned".
_KIND, _COLOUR, _POS, _SIZE, _FILL = range(5)
N_ATTRS = 5


@dataclass(frozen=True)
class DrawnObject:
    """One drawn object: its named attributes and its exact geometry (unit coordinates)."""

    kind: str  # one of KINDS
    colour: str  # one of COLOUR_NAMES
    position: str  # one of POSITIONS
    size: str  # one of SIZES
    fill: str  # one of FILLS (scribbles are always "outlined")
    centre: tuple[float, float]  # (x, y) in [0, 1], y down
    radius: float  # half the extent, in units of the image side
    rotation: float  # radians
    stroke: float  # outline / scribble width in output pixels
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Sample:
    """A rendered image with its caption, the scene behind it and the structured query the caption states."""

    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    objects: tuple[DrawnObject, ...]
    background: str  # one of BACKGROUNDS, or "tint" for an unnamed pale tint
    background_rgb: tuple[int, int, int]
    query: np.ndarray  # (2, N_ATTRS) int, -1 = not mentioned; row 1 unused for one-object captions
    query_background: int  # index into BACKGROUNDS, or -1 when the caption does not name it

    def scene_array(self) -> np.ndarray:
        """(2, N_ATTRS) int attribute indices of the objects (row 1 is -2 for a one-object scene)."""
        out = np.full((2, N_ATTRS), -2, dtype=np.int64)
        for i, o in enumerate(self.objects):
            out[i] = (KINDS.index(o.kind), COLOUR_NAMES.index(o.colour), POSITIONS.index(o.position),
                      SIZES.index(o.size), FILLS.index(o.fill))
        return out


def _jitter_colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(COLOURS[name], dtype=np.float64)
    shade = rng.uniform(0.8, 1.08)  # darker or slightly lighter
    rgb = base * shade + rng.uniform(-18, 18, size=3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _background(rng: np.random.Generator, avoid: set[str]) -> tuple[str, tuple[int, int, int]]:
    """A background: mostly white or near-white (CLIPDraw's canvas), sometimes dark, gray, tinted or coloured."""
    u = rng.random()
    if u < 0.5:
        v = 255 - int(rng.integers(0, 14))
        return "white", (v, v, v)
    others = [c for c in COLOUR_NAMES if c not in avoid]
    if u < 0.6:
        c = np.array(COLOURS[others[rng.integers(len(others))]], dtype=np.float64)
        rgb = 0.85 * 255 + 0.15 * c  # pale tint, left unnamed
        return "tint", tuple(int(v) for v in rgb)
    if u < 0.7:
        v = int(rng.integers(100, 170))
        return "gray", (v, v, v)
    if u < 0.8:
        v = int(rng.integers(0, 35))
        return "black", (v, v, v)
    name = others[rng.integers(len(others))]
    return name, _jitter_colour(rng, name)


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices (unit coordinates) of a square, triangle, star or cross centred at (cx, cy) with half-extent r."""
    if kind == "square":
        angles = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        pts = [(1.15 * r * math.cos(a), 1.15 * r * math.sin(a)) for a in angles]  # half side 0.81 r
    elif kind == "triangle":
        angles = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        pts = [(r * math.cos(a), r * math.sin(a) + 0.15 * r) for a in angles]  # centre the bounding box
    elif kind == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else 0.42 * r
            pts.append((rr * math.cos(a), rr * math.sin(a) + 0.1 * r))
    elif kind == "cross":
        t = 0.3 * r  # half arm thickness
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t),
               (-t, -t)]
    else:
        raise ValueError(f"`kind` must be one of square, triangle, star, cross, got {kind!r}")
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _scribble_points(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """A smooth free-hand stroke: a Catmull-Rom curve through 4-6 random points inside the object's box."""
    n = int(rng.integers(4, 7))
    ctrl = np.stack([cx + rng.uniform(-r, r, n), cy + rng.uniform(-r, r, n)], axis=1)
    ctrl = np.concatenate([ctrl[:1], ctrl, ctrl[-1:]])
    out = []
    for i in range(1, n):
        p0, p1, p2, p3 = ctrl[i - 1], ctrl[i], ctrl[i + 1], ctrl[i + 2]
        for t in np.linspace(0, 1, 8, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(ctrl[-2])
    return [(float(x), float(y)) for x, y in out]


def _draw(draw: ImageDraw.ImageDraw, obj: DrawnObject, rng: np.random.Generator, side: int) -> None:
    px = lambda pts: [(x * side, y * side) for x, y in pts]  # noqa: E731
    width = max(1, round(obj.stroke * SUPERSAMPLE))
    cx, cy, r = obj.centre[0], obj.centre[1], obj.radius
    if obj.kind == "circle":
        box = [(cx - r) * side, (cy - r) * side, (cx + r) * side, (cy + r) * side]
        if obj.fill == "filled":
            draw.ellipse(box, fill=obj.rgb)
        else:
            draw.ellipse(box, outline=obj.rgb, width=width)
    elif obj.kind == "scribble":
        for _ in range(int(rng.integers(1, 4))):  # one to three strokes of the same colour
            draw.line(px(_scribble_points(rng, cx, cy, r)), fill=obj.rgb, width=width, joint="curve")
    else:
        pts = px(_polygon(obj.kind, cx, cy, r, obj.rotation))
        if obj.fill == "filled":
            draw.polygon(pts, fill=obj.rgb)
        else:
            draw.line(pts + pts[:2], fill=obj.rgb, width=width, joint="curve")


def _make_object(rng: np.random.Generator, kind: str, colour: str, position: str, size: str, fill: str,
                 two: bool) -> DrawnObject:
    if kind == "scribble":  # free strokes spread wider than a shape of the same size
        r = rng.uniform(0.1, 0.16) if size == "small" else rng.uniform(0.2, 0.32)
    elif size == "small":
        r = rng.uniform(0.08, 0.12)
    else:
        r = rng.uniform(0.15, 0.2) if (two or position != "centre") else rng.uniform(0.17, 0.3)
    px, py = POSITION_CENTRES[position]
    x = float(np.clip(px + rng.uniform(-0.06, 0.06), r + 0.02, 0.98 - r))
    y = float(np.clip(py + rng.uniform(-0.06, 0.06), r + 0.02, 0.98 - r))
    rot = float(rng.uniform(-0.35, 0.35)) if kind != "circle" else 0.0
    # Outline widths from hairline (CLIPDraw strokes downsampled 224 -> 64) to bold.
    stroke = float(rng.choice([0.6, 1.0, 1.5, 2.0, 3.0]))
    return DrawnObject(kind, colour, position, size, fill, (x, y), float(r), rot, stroke, _jitter_colour(rng, colour))


def _phrase(rng: np.random.Generator, obj: DrawnObject, q: np.ndarray, *, full: bool) -> str:
    """Describe `obj`, recording in `q` (N_ATTRS,) which attributes the phrase names."""
    words = []
    if not full and rng.random() < 0.25:
        words.append(obj.size)
        q[_SIZE] = SIZES.index(obj.size)
    if not full and obj.kind != "scribble" and rng.random() < 0.2:
        words.append(obj.fill)
        q[_FILL] = FILLS.index(obj.fill)
    mention_colour = full or rng.random() < 0.8
    mention_kind = full or obj.kind == "scribble" or rng.random() < 0.9
    if not (mention_colour or mention_kind):
        mention_colour = True
    if mention_colour:
        words.append(obj.colour)
        q[_COLOUR] = COLOUR_NAMES.index(obj.colour)
    if mention_kind:
        words.append(obj.kind)
        q[_KIND] = KINDS.index(obj.kind)
    else:
        words.append("shape")
    return " ".join(words)


def make_sample(seed: int, *, image_size: int = IMAGE_SIZE, two_object_prob: float = 0.25,
                scribble_prob: float = 0.1) -> Sample:
    """Render one captioned sample, a pure function of its arguments.

    `two_object_prob` and `scribble_prob` set how often a scene holds two shapes or one scribble; zero-shot
    evaluation uses `make_sample(seed, two_object_prob=0, scribble_prob=0)` (one shape per image).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    if not 8 <= image_size <= 1024:
        raise ValueError(f"`image_size` must be in [8, 1024], got {image_size}")
    for name, p in (("two_object_prob", two_object_prob), ("scribble_prob", scribble_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {p}")
    rng = np.random.default_rng(int(seed))
    query = np.full((2, N_ATTRS), -1, dtype=np.int64)
    u = rng.random()
    if u < two_object_prob:
        pair = ("left", "right") if rng.random() < 0.5 else ("top", "bottom")
        if rng.random() < 0.5:
            pair = pair[::-1]
        kinds = rng.choice(len(SHAPES), size=2, replace=True)
        cols = rng.choice(len(COLOUR_NAMES), size=2, replace=False)
        objs = tuple(_make_object(rng, SHAPES[kinds[i]], COLOUR_NAMES[cols[i]], pair[i], "small",
                                  FILLS[rng.integers(2)], True) for i in range(2))
        phrases = [_phrase(rng, o, query[i], full=True) for i, o in enumerate(objs)]
        if rng.random() < 0.6:
            for i, o in enumerate(objs):
                phrases[i] += " " + POSITION_PHRASES[o.position]
                query[i, _POS] = POSITIONS.index(o.position)
        body = "a " + phrases[0] + " and a " + phrases[1]
        text = ("two shapes: " + body) if rng.random() < 0.5 else body
    else:
        scribble = rng.random() < scribble_prob / max(1e-9, 1.0 - two_object_prob)
        kind = "scribble" if scribble else SHAPES[rng.integers(len(SHAPES))]
        obj = _make_object(rng, kind, COLOUR_NAMES[rng.integers(6)], POSITIONS[rng.integers(5)],
                           SIZES[rng.integers(2)], "outlined" if scribble else FILLS[rng.integers(2)], False)
        objs = (obj,)
        phrase = _phrase(rng, obj, query[0], full=False)
        if rng.random() < 0.4:
            phrase += " " + POSITION_PHRASES[obj.position]
            query[0, _POS] = POSITIONS.index(obj.position)
        template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
        text = template.format(phrase)
    bg_name, bg_rgb = _background(rng, {o.colour for o in objs})
    query_bg = -1
    if bg_name != "tint" and rng.random() < 0.15:
        text += f" on a {bg_name} background"
        query_bg = BACKGROUNDS.index(bg_name)

    side = image_size * SUPERSAMPLE
    img = Image.new("RGB", (side, side), bg_rgb)
    draw = ImageDraw.Draw(img)
    for o in objs:
        _draw(draw, o, rng, side)
    image = np.array(img.reduce(SUPERSAMPLE), dtype=np.uint8)  # a writable copy
    return Sample(image, text, objs, bg_name, bg_rgb, query, query_bg)


def make_batch(seeds: list[int] | np.ndarray, **kwargs) -> tuple[np.ndarray, list[str], list[Sample]]:
    """Render `make_sample(seed, **kwargs)` for each seed: ((B, H, W, 3) uint8 images, captions, samples)."""
    samples = [make_sample(int(s), **kwargs) for s in seeds]
    return np.stack([s.image for s in samples]), [s.caption for s in samples], samples


def swap_shape(sample: Sample, rng: np.random.Generator) -> tuple[str, np.ndarray, int] | None:
    """A hard-negative caption for `sample`: its caption with the first named shape replaced by another one.

    Returns (caption, query, query_background), or None when the caption names no shape. Captions that differ
    from the truth in one word are the hard negatives of NegCLIP (Yuksekgonul et al. 2023, "When and why
    vision-language models behave like bags-of-words"); shape is the attribute a colour-and-position shortcut
    learns last, so it is the one swapped.
    """
    row = 0 if sample.query[0, _KIND] >= 0 else 1 if sample.query[1, _KIND] >= 0 else -1
    if row < 0 or KINDS[sample.query[row, _KIND]] == "scribble":
        return None
    old = KINDS[sample.query[row, _KIND]]
    new = [k for k in SHAPES if k != old][rng.integers(len(SHAPES) - 1)]
    words = sample.caption.split(" ")
    # The first object's phrase comes first, so when both name a shape the first occurrence is row 0's.
    words[words.index(old)] = new
    query = sample.query.copy()
    query[row, _KIND] = KINDS.index(new)
    return " ".join(words), query, sample.query_background


def caption_matches(samples: list[Sample], captions: list[tuple[np.ndarray, int]] | None = None,
                    ignore_position: bool = False) -> np.ndarray:
    """(B, C) bool: entry [i, j] says caption j is true of image i.

    Captions are the samples' own (then the diagonal is True) or `captions`, a list of (query, query_background)
    as `swap_shape` returns. A caption is true of an image when it names as many objects as the image holds and
    every attribute it names (kind, colour, position, size, fill, background) matches, under some pairing of its
    objects with the image's. Used as multi-positive targets in the contrastive loss, since a batch holds many
    true pairs besides the diagonal ("a red shape" is true of every red image). `ignore_position` treats every
    named position as matching (for augmented views, whose objects have moved).
    """
    own = captions is None
    if own:
        captions = [(s.query, s.query_background) for s in samples]
    scenes = np.stack([s.scene_array() for s in samples])  # (B, 2, A)
    queries = np.stack([q for q, _ in captions])  # (C, 2, A)
    if ignore_position:
        queries = queries.copy()
        queries[:, :, _POS] = -1
    n_img = np.array([len(s.objects) for s in samples])
    n_cap = np.array([1 if q[1, _KIND] == -1 and q[1, _COLOUR] == -1 else 2 for q, _ in captions])
    bg_img = np.array([BACKGROUNDS.index(s.background) if s.background in BACKGROUNDS else -3 for s in samples])
    bg_cap = np.array([b for _, b in captions])

    def ok(qi: int, si: int) -> np.ndarray:  # (B, C): caption object qi matches image object si
        q = queries[None, :, qi, :]  # (1, C, A)
        s = scenes[:, None, si, :]  # (B, 1, A)
        return np.all((q == -1) | (q == s), axis=-1)

    one = ok(0, 0)
    two = (ok(0, 0) & ok(1, 1)) | (ok(0, 1) & ok(1, 0))
    m = np.where(n_cap[None, :] == 1, one, two) & (n_img[:, None] == n_cap[None, :])
    m &= (bg_cap[None, :] == -1) | (bg_cap[None, :] == bg_img[:, None])
    if own:
        np.fill_diagonal(m, True)
    return m
