"""The studio's pipelines, one task per module: `from pipelines import CLIPDrawPipeline` and so on.

The exports are the pipeline classes of the task table (`pipelines/registry.py`). Imports are lazy so that
`import pipelines` stays cheap (torch, diffusers and the generators load on first use).
"""

from __future__ import annotations

import importlib

from pipelines.registry import exports

_EXPORTS = exports()
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}; available: {__all__}")
