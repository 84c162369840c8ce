"""On a ZeroGPU Space (`spaces` importable) the GPU-bound handlers are wrapped with `spaces.GPU`."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest
from PIL import Image


def test_handlers_are_wrapped_when_spaces_is_importable(tiny_configs, monkeypatch):
    calls: list[str] = []
    fake = types.ModuleType("spaces")

    def GPU(fn=None, duration=None):  # noqa: N802 — the real decorator's name and both of its forms
        def deco(f):
            def wrapped(*args, **kwargs):
                calls.append(f.__name__)
                return f(*args, **kwargs)
            wrapped.__name__ = f.__name__
            return wrapped
        return deco(fn) if fn is not None else deco

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
        assert sketch["clipdraw"].__wrapped__ is not None  # the Vector Sketch handlers too (leased by task)
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(app)
    assert not app.make_lens_functions("cpu")["classify"].__qualname__.endswith("wrapped")


def test_a_zerogpu_lease_is_sized_from_the_steps_measured_here(tiny_configs, monkeypatch):
    """Issue 12 #7: the lease asked for is num_steps × the seconds per step measured on this server (the cap
    before any run finished); past the cap the run is refused before any work, naming num_steps."""
    from studio import lease

    asked: list[int] = []
    fake = types.ModuleType("spaces")

    def GPU(fn=None, duration=None):  # noqa: N802 — both of the real decorator's forms
        def deco(f):
            def wrapped(*args, **kwargs):
                asked.append(duration(*args, **kwargs) if callable(duration) else 60)
                return f(*args, **kwargs)
            return wrapped
        return deco(fn) if fn is not None else deco

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("STUDIO_GPU_MAX_S", "120")
    monkeypatch.setattr(lease, "_PER_STEP", {})
    from studio import app

    try:
        zero = importlib.reload(app)
        draw = zero.make_sketch_functions("cpu")["clipdraw"]
        settings = {"num_steps": 2, "num_strokes": 2, "canvas_size": 32}
        from studio.ui.common import StopFlag, drive

        results = []
        for _ in drive(draw("tiny-test-vit", "a red circle", None, settings), StopFlag(), lambda item: (),
                       lambda result: results.append(result) or ()):
            pass
        assert asked == [120]  # nothing measured yet: the cap
        out = results[0]  # the page's driver recorded the finished run's seconds per step
        per_step = lease.per_step("clipdraw")
        assert per_step == out.timings["per_step_s"]
        for _ in draw("tiny-test-vit", "a red circle", None, {**settings, "num_steps": 3}):
            pass
        assert asked[-1] == max(10, min(120, int(3 * per_step * 1.25 + 10)))
        too_many = int(200 / per_step) + 1
        with pytest.raises(ValueError, match=r"`num_steps` .* lower `num_steps` to \d+ or fewer"):
            draw("tiny-test-vit", "a red circle", None, {**settings, "num_steps": too_many})
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(app)
