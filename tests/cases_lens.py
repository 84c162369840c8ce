"""Run-protocol cases for the CLIP Lens tasks (see tests/test_run_protocol.py): tiny synthetic images, two-image
galleries (two steps, each previewing the image it embeds)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def shape_image(colour: tuple[int, int, int], square: bool = False, size: int = 32) -> Image.Image:
    """A filled circle (or square) of `colour` on white."""
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    inside = (np.maximum(abs(x), abs(y)) < 0.3) if square else (x ** 2 + y ** 2 < 0.09)
    arr = np.full((size, size, 3), 255, np.uint8)
    arr[inside] = colour
    return Image.fromarray(arr)


def gallery() -> list[Image.Image]:
    return [shape_image((40, 40, 220), square=True), shape_image((220, 40, 40))]


def lens_classify(scorer):
    from pipelines.lens import CLIPLensPipeline

    return CLIPLensPipeline(scorer), {"image": shape_image((220, 40, 40)),
                                      "labels": "red circle, blue square"}, {}


def lens_search(scorer):
    from pipelines.lens import CLIPLensPipeline

    return CLIPLensPipeline(scorer), {"images": gallery(), "query": "red circle"}, {}


def lens_arithmetic(scorer):
    from pipelines.lens import CLIPLensPipeline

    return CLIPLensPipeline(scorer), {"images": gallery(), "query_image": shape_image((220, 40, 40)),
                                      "minus": "circle", "plus": "square"}, {"weight": 0.5}


CASES = {"lens-classify": lens_classify, "lens-search": lens_search, "lens-arithmetic": lens_arithmetic}
FILES = {"lens-classify": {"png", "json"}, "lens-search": {"png", "json"}, "lens-arithmetic": {"png", "json"}}


def lens_video(scorer):
    import tempfile
    from pathlib import Path

    from pipelines.lens_video import LensVideoPipeline
    from studio.demo.scenes import Appearance, write_shapes_video

    folder = Path(tempfile.mkdtemp(prefix="lens-video-case-"))
    video = write_shapes_video(folder / "shapes.mp4", [Appearance("red", "circle", 1.0, 2.0)], 2.0, fps=5,
                               size=(96, 64))
    return (LensVideoPipeline(scorer, cache_dir=folder / "cache"), {"video": str(video)},
            {"query": "a red circle", "patch_size": 48, "batch_frames": 1, "preview_every": 1, "threshold": 0.0})


def lens_detect(scorer):
    from pipelines.lens_detect import LensDetectPipeline
    from studio.demo.scenes import make_scene

    return (LensDetectPipeline(scorer), {"image": make_scene(0, size=128).image},
            {"queries": "a blue square", "batch_size": 4, "threshold": 0.0})


CASES.update({"lens-video": lens_video, "lens-detect": lens_detect})
FILES.update({"lens-video": {"png", "json", "clip"}, "lens-detect": {"png", "json"}})
