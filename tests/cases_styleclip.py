"""Run-protocol cases for the Latent Editing tasks (see tests/test_run_protocol.py): the bundled demo generator
"demo-shapes" with the demo CLIP, two steps (relevance: two samples, not cached, so that every run computes it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def _pipe(scorer):
    from pipelines.styleclip import StyleCLIPPipeline
    from studio.generators import get_generator

    # use_cache is off in every case that computes relevance: nothing is written to the cache folder
    return StyleCLIPPipeline(get_generator("demo-shapes"), scorer, cache_dir=Path(tempfile.gettempdir()) / "unused")


def _photo(size: int = 48) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.full((size, size, 3), 230, np.uint8)
    arr[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.06] = (30, 60, 200)
    return Image.fromarray(arr)


def edit(scorer):
    return _pipe(scorer), {"prompt": "a red circle"}, {"num_steps": 2, "preview_every": 1, "seed": 3}


def global_direction(scorer):
    return (_pipe(scorer), {"neutral": "a circle", "target": "a red circle"},
            {"num_samples": 2, "use_cache": False, "beta": 0.0, "seed": 3})


def invert(scorer):
    return _pipe(scorer), {"image": _photo()}, {"num_steps": 2, "preview_every": 1}


def relevance(scorer):
    return _pipe(scorer), {}, {"num_samples": 2, "use_cache": False}


def sample(scorer):
    return _pipe(scorer), {}, {"seed": 3, "truncation": 0.5}


def _mapper_pipe(scorer):
    from pipelines.styleclip_mapper import StyleCLIPMapperPipeline

    return StyleCLIPMapperPipeline.from_pipe(_pipe(scorer))


def mapper(scorer):
    return _mapper_pipe(scorer), {"prompt": "a red circle"}, {"num_steps": 2, "batch_size": 2, "num_eval": 2,
                                                              "preview_every": 1, "seed": 3}


def mapper_apply(scorer):
    pipe = _mapper_pipe(scorer)
    trained = pipe.train_mapper("a red circle", num_steps=1, batch_size=1, num_eval=1)
    return pipe, {"mapper": trained.mapper}, {"seed": 3, "strength": 0.8}


CASES = {"styleclip-edit": edit, "styleclip-global": global_direction, "styleclip-invert": invert,
         "styleclip-relevance": relevance, "styleclip-mapper": mapper, "styleclip-mapper-apply": mapper_apply,
         "styleclip-sample": sample}
FILES = {"styleclip-edit": {"png", "video"}, "styleclip-global": {"png"}, "styleclip-invert": {"png", "video"},
         "styleclip-relevance": {"png"}, "styleclip-mapper": {"png", "video", "mapper"},
         "styleclip-mapper-apply": {"png"}, "styleclip-sample": {"png"}}
