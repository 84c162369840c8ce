"""Images in and out: reading user images safely (any common input → RGB, size limits, clear errors), the one
tensor/array → image conversion (`to_uint8`, `to_pil`) and the one shortest-side resize with centre crop
(`resize_crop`). torch is imported only by the functions that make tensors, so `studio.media` and the UI can use
the converters without it."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16  # smaller images carry nothing CLIP can read
MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding (PIL's own limit is ~179 MP)
MAX_DECODE_BYTES = 160_000_000  # what one decoded image may take in memory: 40 MP at PIL's 4 bytes a pixel
WORK_SIDE = 1024  # larger images are downscaled (aspect kept) before any processing
_NATIVE_RESIZE = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # high-depth modes PIL resizes as they are
_RESIZABLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", *_NATIVE_RESIZE)


def _bytes_per_pixel(mode: str) -> int:
    """Bytes PIL keeps per pixel of a mode (RGB and LA take 4, as PIL stores them)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _file_name(image: Any) -> str:
    """How a message names the image: the file's own name (not the server's temp path), else "the data"."""
    return repr(os.path.basename(os.fspath(image))) if isinstance(image, (str, os.PathLike)) else "the data"


def load_image(image: Any, name: str = "image", max_side: int = WORK_SIDE) -> Image.Image:
    """Any of PIL image, path, bytes, (H,W[,C]) array → RGB PIL image.

    Grayscale and palette images are converted; transparency is composited on white (how a drawing
    with a transparent background looks). Images larger than `max_side` are downscaled. Unreadable,
    too small or absurdly large images raise `ValueError` naming the argument.
    """
    if image is None:
        raise ValueError(f"`{name}` is missing: upload or pass an image")
    opened = not isinstance(image, Image.Image)  # ours to change (a caller's image is never modified)
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
        if w * h * _bytes_per_pixel(img.mode) > MAX_DECODE_BYTES:
            raise ValueError(f"`{name}` is {w}×{h} pixels in mode {img.mode}, which would take "
                             f"{w * h * _bytes_per_pixel(img.mode) / 1e6:.0f} MB decoded; at most "
                             f"{MAX_DECODE_BYTES / 1e6:.0f} MB")
        if opened and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))  # JPEG decodes at 1/2, 1/4 or 1/8 size when that is enough
        img.load()
    except UnidentifiedImageError:
        # the file's own name, not the server's temp path, and no exception name (issue 29)
        raise ValueError(f"`{name}` could not be read as an image: {_file_name(image)} is not in an image format "
                         "this reads (PNG, JPEG, WebP, GIF, BMP, TIFF, ...)") from None
    except (OSError, SyntaxError) as err:
        why = str(err).replace(os.fspath(image), "") if isinstance(image, (str, os.PathLike)) else str(err)
        raise ValueError(f"`{name}` could not be read as an image: {_file_name(image)} looks damaged or cut short "
                         f"({why.strip(' :')})") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"`{name}` is too large to decode safely: {err}") from None
    if min(img.size) < MIN_SIDE:
        raise ValueError(f"`{name}` is {img.size[0]}×{img.size[1]} pixels; each side must be at least {MIN_SIDE}")
    # Down to the working size first, in the image's own mode: every conversion after it touches at most
    # max_side² pixels (a 16-bit 39 MP PNG went through float64 whole: +1 GB per decode).
    img = _shrink(img, max_side)
    img = ImageOps.exif_transpose(img)  # the camera's orientation, applied once here for every path
    return _to_rgb(img)


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    """`img` at most `max_side` on its longer side (a new image; `img` itself when it fits)."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if img.mode in _NATIVE_RESIZE:  # no reduce/thumbnail for 16-bit: a box filter then Lanczos, natively
        if max(w, h) > 2 * max_side:
            f = max(w, h) // max_side
            img = img.resize((max(size[0], w // f), max(size[1], h // f)), Image.Resampling.BOX)
        return img.resize(size, Image.Resampling.LANCZOS)
    if img.mode not in _RESIZABLE:  # palette, 1-bit and the rest: to a colour mode PIL resizes, first
        alpha = img.mode == "PA" or "transparency" in img.info or "A" in img.getbands()
        img = img.convert("L" if img.mode == "1" else "RGBA" if alpha else "RGB")
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)  # reduce() by whole factors, then Lanczos


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
    if img.mode.startswith("I"):  # 16- or 32-bit integer grey: scale to 8 bits (PIL's convert clips at 255)
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def to_tensor(image: Any, name: str = "image", max_side: int = WORK_SIDE) -> "torch.Tensor":  # noqa: F821
    """(1, 3, H, W) float32 in [0, 1] from anything `load_image` accepts (a tensor passes through, checked)."""
    import torch

    if isinstance(image, torch.Tensor):
        t = image if image.ndim == 4 else image.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(f"`{name}` tensor must be float (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        return t
    img = load_image(image, name, max_side)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


def to_uint8(frame: Any) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, a uint8 array, or floats in [0, 1] (array or tensor; HWC, CHW, or a batch
    of one (1, 3, H, W)); values outside [0, 1] are clipped."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if hasattr(frame, "detach"):  # a torch tensor, without importing torch here
        frame = frame.detach().float().cpu().numpy()
    arr = np.asarray(frame)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`frame` must be an image of shape (H, W, C) or (C, H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from anything `to_uint8` takes (e.g. a (3, H, W) or (1, 3, H, W) tensor in [0, 1])."""
    return Image.fromarray(to_uint8(image))


def resize_crop(x: "torch.Tensor", size: int | tuple[int, int]) -> "torch.Tensor":  # noqa: F821
    """(B, C, H, W) → (B, C, h, w): the shortest side scaled to fit (bicubic, antialiased), then a centre crop;
    `size` is a side or (h, w). How CLIP's preprocessing, CLIPasso's photo and StyleCLIP's inversion target see an
    image."""
    import torch.nn.functional as F

    th, tw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if (h, w) == (th, tw):
        return x
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[..., top:top + th, left:left + tw]
