"""A pixel oracle: measures an image without any model, so tests judge results independently of CLIP.

Given an RGB image it estimates the background (median of the border pixels), the foreground mask (pixels far
from the background), the dominant colour of the foreground named from the demo palette by hue (with black,
white and gray for unsaturated pixels), the foreground's centroid and coarse position, its bounding box, and an
edge map. Plain numpy; the colour naming uses the HSV hue circle (Smith 1978, "Color gamut transform pairs").

Images may be numpy arrays or torch tensors, (H, W, 3) or (3, H, W), uint8 in [0, 255] or floats in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Hue (degrees) of each chromatic name; a pixel takes the nearest on the hue circle. Matches the palette in
# studio.demo.shapes (red 0, orange ~30, yellow ~55, green ~125, blue ~225, purple ~280).
HUES: dict[str, float] = {"red": 0.0, "orange": 30.0, "yellow": 55.0, "green": 125.0, "blue": 225.0, "purple": 280.0}
ACHROMATIC: tuple[str, ...] = ("black", "gray", "white")
COLOUR_NAMES: tuple[str, ...] = tuple(HUES) + ACHROMATIC
POSITION_NAMES: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")


@dataclass
class Measurement:
    """What the oracle sees in one image (coordinates in [0, 1], x right, y down)."""

    background: tuple[float, float, float]  # RGB in [0, 1]
    foreground_fraction: float  # share of pixels that differ from the background
    dominant_colour: str | None  # colour name of most foreground weight; None if no foreground
    colour_fractions: dict[str, float]  # share of foreground weight per colour name (pixels weighted by their
    # distance from the background, so anti-aliased edges half-mixed with it count less)
    centroid: tuple[float, float] | None  # mean (x, y) of the foreground
    position: str | None  # one of POSITION_NAMES, from the centroid
    bbox: tuple[float, float, float, float] | None  # (x0, y0, x1, y1) of the foreground


def to_hwc_float(image) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1] from a numpy array or torch tensor, HWC or CHW, uint8 or float."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or 3 not in (arr.shape[0], arr.shape[-1]):
        raise ValueError(f"`image` must be (H, W, 3) or (3, H, W), got shape {arr.shape}")
    if arr.shape[-1] != 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        raise ValueError(f"float `image` must lie in [0, 1], got range [{arr.min():.3f}, {arr.max():.3f}]")
    return np.clip(arr, 0.0, 1.0)


def background_colour(image) -> np.ndarray:
    """(3,) RGB in [0, 1]: the per-channel median of the one-pixel border."""
    img = to_hwc_float(image)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return np.median(border, axis=0)


def foreground_mask(image, threshold: float = 0.15) -> np.ndarray:
    """(H, W) bool: pixels whose RGB distance (Euclidean, [0, 1] units) from the background exceeds `threshold`."""
    if not 0.0 < threshold < 1.8:
        raise ValueError(f"`threshold` must be in (0, 1.8), got {threshold}")
    img = to_hwc_float(image)
    return np.linalg.norm(img - background_colour(img), axis=-1) > threshold


def colour_names(image) -> np.ndarray:
    """(H, W) array of indices into COLOUR_NAMES: by hue where the pixel has chroma, else black / gray / white.

    The test is on chroma (max - min), not saturation, so that a thin stroke blended with a white, gray or black
    background (which keeps the stroke's hue and loses chroma) is still named by its hue.
    """
    img = to_hwc_float(image)
    mx, mn = img.max(-1), img.min(-1)
    chroma = mx - mn
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    c = np.maximum(chroma, 1e-8)
    hue = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4)) * 60.0
    hues = np.array(list(HUES.values()))
    d = np.abs(hue[..., None] - hues)
    d = np.minimum(d, 360.0 - d)
    out = d.argmin(-1)
    n_chroma = len(HUES)
    achrom = (chroma < 0.12) | (mx < 0.2)
    grey_idx = np.where(mx < 0.3, 0, np.where(mx > 0.8, 2, 1)) + n_chroma
    return np.where(achrom, grey_idx, out)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """Mean (x, y) of the True pixels in [0, 1] (pixel centres), or None for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be 2-D, got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    h, w = mask.shape
    return float((xs.mean() + 0.5) / w), float((ys.mean() + 0.5) / h)


def position_name(xy: tuple[float, float], centre_radius: float = 0.12) -> str:
    """Coarse position of a point: 'centre' within `centre_radius` (per axis) of the middle, else the side of
    the larger offset ('left'/'right'/'top'/'bottom')."""
    dx, dy = xy[0] - 0.5, xy[1] - 0.5
    if abs(dx) <= centre_radius and abs(dy) <= centre_radius:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def edge_map(image, threshold: float = 0.1) -> np.ndarray:
    """(H, W) bool: pixels where the RGB gradient magnitude (central differences) exceeds `threshold`."""
    img = to_hwc_float(image)
    gy, gx = np.gradient(img, axis=(0, 1))
    return np.sqrt((gx ** 2 + gy ** 2).sum(-1)) > threshold


def measure(image, threshold: float = 0.15) -> Measurement:
    """All oracle measurements of one image."""
    img = to_hwc_float(image)
    bg = background_colour(img)
    dist = np.linalg.norm(img - bg, axis=-1)
    mask = dist > threshold
    frac = float(mask.mean())
    if not mask.any():
        return Measurement(tuple(float(v) for v in bg), frac, None, {}, None, None, None)
    names = colour_names(img)[mask]
    counts = np.bincount(names, weights=dist[mask], minlength=len(COLOUR_NAMES))
    # Foreground pixels named like the background are edges half-mixed with it: drop them unless nothing else.
    bg_name = int(colour_names(bg[None, None, :])[0, 0])
    if counts.sum() > counts[bg_name]:
        counts[bg_name] = 0.0
    counts = counts / counts.sum()
    fractions = {n: float(counts[i]) for i, n in enumerate(COLOUR_NAMES) if counts[i] > 0}
    xy = centroid(mask)
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    bbox = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
    return Measurement(tuple(float(v) for v in bg), frac, COLOUR_NAMES[int(counts.argmax())], fractions, xy,
                       position_name(xy), tuple(float(v) for v in bbox))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with every region not reachable from the border through False pixels set True (an outline's
    inside), by flood fill from the border (4-connected)."""
    outside = np.zeros_like(mask)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = ~mask[0], ~mask[-1], ~mask[:, 0], ~mask[:, -1]
    free = ~mask
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= free
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def _template(kind: str, rotation: float, bbox: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the filled `kind` at `rotation`, stretched to fill the pixel box (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw

    from studio.demo.shapes import _polygon

    ss = 4
    h, w = shape
    x0, y0, x1, y1 = bbox
    img = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse([x0 * ss, y0 * ss, x1 * ss - 1, y1 * ss - 1], fill=255)
    else:
        pts = np.array(_polygon(kind, 0.0, 0.0, 1.0, rotation))
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - lo) / (hi - lo) * [(x1 - x0) * ss, (y1 - y0) * ss] + [x0 * ss, y0 * ss]
        draw.polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(img.reduce(ss)) >= 128


def shape_scores(image, threshold: float = 0.15) -> dict[str, float]:
    """How well each demo shape fits the image's main object: the best intersection-over-union, over rotations
    in the demo data's range (±0.35 rad), of the filled shape stretched to the object's bounding box.

    The object is the foreground pixels named like the dominant colour, with an outline's inside filled, so a
    filled shape and an outlined one of the same kind score alike. Empty dict when there is no foreground.
    """
    from studio.demo.shapes import SHAPES

    img = to_hwc_float(image)
    m = measure(img, threshold)
    if m.dominant_colour is None:
        return {}
    mask = foreground_mask(img, threshold) & (colour_names(img) == COLOUR_NAMES.index(m.dominant_colour))
    if not mask.any():
        return {}
    mask = _fill_holes(mask)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    scores = {}
    for kind in SHAPES:
        best = 0.0
        for rot in ((0.0,) if kind == "circle" else np.linspace(-0.35, 0.35, 9)):
            t = _template(kind, float(rot), bbox, mask.shape)
            best = max(best, float((t & mask).sum() / max(1, (t | mask).sum())))
        scores[kind] = best
    return scores


def shape_name(image, threshold: float = 0.15) -> str | None:
    """The demo shape (circle, square, triangle, star, cross) that best fits the image's main object
    (`shape_scores`), or None when there is no foreground."""
    scores = shape_scores(image, threshold)
    return max(scores, key=scores.get) if scores else None
