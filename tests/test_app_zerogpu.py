"""On a ZeroGPU Space (`spaces` importable) the GPU-bound handlers are wrapped with `spaces.GPU`."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
from PIL import Image


def test_handlers_are_wrapped_when_spaces_is_importable(tiny_configs, monkeypatch):
    calls: list[str] = []
    fake = types.ModuleType("spaces")

    def GPU(fn):  # noqa: N802 — the real decorator's name
        def wrapped(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        wrapped.__name__ = fn.__name__
        return wrapped

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    from studio import app

    try:
        zero = importlib.reload(app)
        lens = zero.make_lens_functions("cpu")
        img = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
        out = lens["classify"]("tiny-test-vit", img, "a, b")
        assert calls == ["classify"] and len(out["labels"]) == 2
        sketch = zero.make_sketch_functions("cpu")
        assert sketch["clipdraw"].__qualname__.endswith("wrapped")  # the Vector Sketch handlers too
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(app)
    assert not app.make_lens_functions("cpu")["classify"].__qualname__.endswith("wrapped")
