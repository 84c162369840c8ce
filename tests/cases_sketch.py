"""Run-protocol cases for the Vector Sketch tasks (see tests/test_run_protocol.py): tiny, seeded, two steps (Vectorize:
two layers of two steps)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _photo(size: int = 48) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.full((size, size, 3), 240, np.uint8)
    arr[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08] = (200, 40, 40)
    return Image.fromarray(arr)


def clipdraw(scorer):
    from pipelines.clipdraw import CLIPDrawPipeline

    return CLIPDrawPipeline(scorer), {"prompt": "a red circle"}, {"num_strokes": 4, "num_steps": 2,
                                                                   "canvas_size": 32, "preview_every": 1}


CASES = {"clipdraw": clipdraw}
FILES = {"clipdraw": {"png", "svg", "video"}}


def clipasso(scorer):
    from pipelines.clipasso import CLIPassoPipeline

    return CLIPassoPipeline(scorer), {"image": _photo()}, {"num_strokes": 3, "num_steps": 2, "num_seeds": 2,
                                                            "canvas_size": 32, "preview_every": 1}


CASES["clipasso"] = clipasso
FILES["clipasso"] = {"png", "svg", "video"}


def vectorize(scorer):
    from pipelines.vectorize import VectorizePipeline

    return VectorizePipeline(scorer), {"image": _photo()}, {"num_paths": 2, "num_steps": 2, "canvas_size": 32,
                                                             "preview_every": 1}


CASES["vectorize"] = vectorize
FILES["vectorize"] = {"png", "svg", "video", "sheet"}
