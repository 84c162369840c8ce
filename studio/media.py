"""Turning results into files: frames → GIF/MP4, PNGs that carry their generation settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, PngImagePlugin

from studio.images import to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # what a folder's images are
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi")  # what lens-video reads
MAX_FRAMES = 120  # frames a result keeps for its video; more only makes the file bigger


def thin_frames(frames: list, limit: int = MAX_FRAMES) -> list:
    """At most `limit` frames: the first, the last and an even spread between (the one way every task thins)."""
    if len(frames) <= limit:
        return frames
    step = (len(frames) - 1) / (limit - 1)
    return [frames[round(i * step)] for i in range(limit)]

# PNG text chunk holding our JSON settings; "parameters" is what other SD tools write, so we add a readable copy.
METADATA_KEY = "clip-studio"
MAX_METADATA_CHARS = 256 * 1024  # a run's settings are a few KB (prompts are at most a few thousand characters)
MAX_METADATA_DEPTH = 32  # our settings nest 2-3 deep; json.loads recurses per level (200,000 `[`: RecursionError)


def _out_path(path: str | os.PathLike | None, suffix: str) -> Path:
    if path is None:
        from studio.outputs import new_file

        return new_file(suffix)
    return Path(path)


def save_gif(frames: Sequence[Any], path: str | os.PathLike | None = None, fps: float = 10.0) -> Path:
    """Write frames as a looping GIF; returns the path (a temp file when `path` is None)."""
    if len(frames) == 0:
        raise ValueError("`frames` must hold at least one frame, got 0")
    if not 0 < fps <= 60:
        raise ValueError(f"`fps` must be in (0, 60], got {fps}")
    images = [Image.fromarray(to_uint8(f)) for f in frames]
    out = _out_path(path, ".gif")
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out


def save_mp4(frames: Sequence[Any], path: str | os.PathLike | None = None, fps: float = 10.0) -> Path:
    """Write frames as an H.264 MP4 (imageio-ffmpeg's bundled ffmpeg); sides are padded to even sizes."""
    import imageio.v2 as imageio  # imported here: ffmpeg start-up is not needed for the rest of the studio

    if len(frames) == 0:
        raise ValueError("`frames` must hold at least one frame, got 0")
    if not 0 < fps <= 60:
        raise ValueError(f"`fps` must be in (0, 60], got {fps}")
    out = _out_path(path, ".mp4")
    arrays = [to_uint8(f) for f in frames]
    h, w = arrays[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2  # yuv420p needs even sides
    with imageio.get_writer(out, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1) as writer:
        for a in arrays:
            if a.shape[:2] != (h, w):
                raise ValueError(f"all `frames` must share one size, got {a.shape[:2]} after {(h, w)}")
            if (ph, pw) != (h, w):
                a = np.pad(a, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            writer.append_data(a)
    return out


def save_png(image: Any, path: str | os.PathLike | None = None, metadata: dict | None = None) -> Path:
    """Write a PNG; `metadata` (JSON-serialisable) goes into a text chunk that `read_png_metadata` reads back."""
    out = _out_path(path, ".png")
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text(METADATA_KEY, json.dumps(metadata, sort_keys=True))
        info.add_text("parameters", ", ".join(f"{k}: {v}" for k, v in sorted(metadata.items())))
    Image.fromarray(to_uint8(image)).save(out, pnginfo=info)
    return out


def read_png_metadata(source: str | os.PathLike | Image.Image) -> dict | None:
    """The settings stored by `save_png`, or None when the image carries none (or they are unreadable)."""
    img = source if isinstance(source, Image.Image) else Image.open(source)
    text = getattr(img, "text", None) or img.info
    raw = text.get(METADATA_KEY) if text else None
    if raw is None or not isinstance(raw, str) or len(raw) > MAX_METADATA_CHARS or _nesting(raw) > MAX_METADATA_DEPTH:
        return None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, counted without parsing it (brackets inside strings are skipped;
    escaped quotes are taken apart first), so that `json.loads` never recurses past `MAX_METADATA_DEPTH`."""
    depth = deepest = 0
    in_string = False
    text = text.replace("\\\\", "").replace('\\"', "")  # escaped backslashes, then escaped quotes
    for ch in text:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
