"""Reading user images safely: any common input → RGB, size limits, clear errors."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MIN_SIDE = 16  # smaller images carry nothing CLIP can read
MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding (PIL's own limit is ~179 MP)
WORK_SIDE = 1024  # larger images are downscaled (aspect kept) before any processing


def load_image(image: Any, name: str = "image", max_side: int = WORK_SIDE) -> Image.Image:
    """Any of PIL image, path, bytes, (H,W[,C]) array → RGB PIL image.

    Grayscale and palette images are converted; transparency is composited on white (how a drawing
    with a transparent background looks). Images larger than `max_side` are downscaled. Unreadable,
    too small or absurdly large images raise `ValueError` naming the argument.
    """
    if image is None:
        raise ValueError(f"`{name}` is missing: upload or pass an image")
    try:
        if isinstance(image, Image.Image):
            img = image
        elif isinstance(image, (str, os.PathLike)):
            img = Image.open(image)
        elif isinstance(image, (bytes, bytearray)):
            img = Image.open(io.BytesIO(image))
        elif isinstance(image, np.ndarray):
            img = _from_array(image, name)
        else:
            raise ValueError(f"`{name}` must be a PIL image, a path, bytes or an array, got {type(image).__name__}")
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"`{name}` is {w}×{h} pixels; images above {MAX_PIXELS // 1_000_000} MP are refused")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"`{name}` could not be read as an image ({type(err).__name__}: {err})") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"`{name}` is too large to decode safely: {err}") from None
    if min(img.size) < MIN_SIDE:
        raise ValueError(f"`{name}` is {img.size[0]}×{img.size[1]} pixels; each side must be at least {MIN_SIDE}")
    img = _to_rgb(img)
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"`{name}` array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise ValueError(f"`{name}` array holds NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def to_tensor(image: Any, name: str = "image", max_side: int = WORK_SIDE) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] from anything `load_image` accepts (a tensor passes through, checked)."""
    if isinstance(image, torch.Tensor):
        t = image if image.ndim == 4 else image.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(f"`{name}` tensor must be float (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        return t
    img = load_image(image, name, max_side)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def to_pil(t: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) float in [0, 1] → PIL RGB."""
    if t.ndim == 4:
        t = t[0]
    arr = (t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(arr)
