"""Run-protocol cases for the image index tasks (lens-index, lens-index-search) and image → image search over
uploads (lens-image-search); see tests/test_run_protocol.py. Each case writes its own small folder of shapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cases_lens import gallery, shape_image


def shapes_folder() -> Path:
    """A fresh folder with a blue square and a red circle."""
    folder = Path(tempfile.mkdtemp(prefix="studio-index-case-"))
    shape_image((40, 40, 220), square=True, size=48).save(folder / "blue_square.png")
    shape_image((220, 40, 40), size=48).save(folder / "red_circle.png")
    return folder


def lens_index(scorer):
    from pipelines.lens_index import CLIPIndexPipeline

    return CLIPIndexPipeline(scorer), {"folder": str(shapes_folder())}, {"batch_size": 1}  # two steps


def lens_index_search(scorer):
    from pipelines.lens_index import CLIPIndexPipeline

    pipe = CLIPIndexPipeline(scorer)
    folder = shapes_folder()
    pipe.index(folder)
    return pipe, {"folder": str(folder), "query": "red circle"}, {"top_k": 2}


def lens_image_search(scorer):
    from pipelines.lens import CLIPLensPipeline

    return CLIPLensPipeline(scorer), {"images": gallery(), "query_image": shape_image((220, 40, 40))}, {}


CASES = {"lens-index": lens_index, "lens-index-search": lens_index_search, "lens-image-search": lens_image_search}
FILES = {"lens-index": {"png", "json"}, "lens-index-search": {"png", "json"}, "lens-image-search": {"png", "json"}}
