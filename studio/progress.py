"""The one callback shape every long-running pipeline shares (STYLE.md §7).

A pipeline's `iterate`/`iter_*` generator yields progress items (`step`, `total`, `preview`, `done=False`),
accepts `"stop"` sent into it, and finally yields its result (`done=True`). `drain` runs such a generator to
the end for the plain `__call__` API, forwarding each step to `callback(step, total, preview)`; a callback that
returns False stops the run, and the pipeline returns its best result so far.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


def drain(gen: Iterator[Any], callback: Callable[[int, int, Any], Any] | None = None) -> Any:
    """Run a progress generator to its result (see the module docstring)."""
    item = next(gen)
    while not item.done:
        stop = callback is not None and callback(item.step, item.total, item.preview) is False
        item = gen.send("stop" if stop else None)
    gen.close()
    return item
