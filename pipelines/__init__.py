"""The studio's pipelines, one task per module: `from pipelines import CLIPDrawPipeline` and so on.

Imports are lazy so that `import pipelines` stays cheap (diffusers and the generators load on first use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CLIPDrawPipeline": "pipelines.clipdraw",
    "CLIPassoPipeline": "pipelines.clipasso",
    "CLIPLensPipeline": "pipelines.lens",
    "LensDetectPipeline": "pipelines.lens_detect",
    "LensVideoPipeline": "pipelines.lens_video",
    "StyleCLIPPipeline": "pipelines.styleclip",
    "Text2ImagePipeline": "pipelines.text2image",
    "VectorizePipeline": "pipelines.vectorize",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}; available: {__all__}")
