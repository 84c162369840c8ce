"""How long a run will hold the GPU, for ZeroGPU Spaces (`spaces.GPU(duration=...)`), from what this server has
measured rather than from constants nobody measured.

ZeroGPU lends a GPU for a duration the Space asks for before each call (60 s by default); a run past it is cut
off, a shorter request waits less in ZeroGPU's queue. So each finished run records its task's seconds per step
on this device (`record`, called by `studio.ui.common.drive`), and the next call of that task asks for
`num_steps × per step × 1.25 + 10 s` (`duration`), capped at the Space's maximum (`STUDIO_GPU_MAX_S`, default
the run limit or 300 s). Before a task has finished once here, the cap is asked for. An estimate past the cap is
refused before any work (`check`), naming `num_steps` and the largest value that fits. No torch here.
"""

from __future__ import annotations

import os
import threading
from typing import Any

MARGIN, OVERHEAD_S = 1.25, 10.0
_PER_STEP: dict[str, float] = {}
_LOCK = threading.Lock()


def max_duration(run_limit_s: float | None = None) -> float:
    value = os.environ.get("STUDIO_GPU_MAX_S")
    if value:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"STUDIO_GPU_MAX_S must be a number of seconds, got {value!r}") from None
    return float(run_limit_s) if run_limit_s else 300.0


def record(task: str, per_step_s: Any) -> None:
    """Remember a finished run's seconds per step (a moving average, new runs weighing a third)."""
    try:
        value = float(per_step_s)
    except (TypeError, ValueError):
        return
    if not value > 0 or value != value:
        return
    with _LOCK:
        old = _PER_STEP.get(task)
        _PER_STEP[task] = value if old is None else (2 * old + value) / 3


def per_step(task: str) -> float | None:
    with _LOCK:
        return _PER_STEP.get(task)


def estimate(task: str, settings: dict | None) -> float | None:
    """Seconds the run of `task` with `settings` should take, or None before one has been measured here."""
    steps = (settings or {}).get("num_steps")
    seconds = per_step(task)
    if seconds is None or not isinstance(steps, (int, float)) or isinstance(steps, bool):
        return None
    return float(steps) * seconds * MARGIN + OVERHEAD_S


def duration(task: str, settings: dict | None, cap: float) -> int:
    """The lease to ask for: the estimate, within [OVERHEAD_S, cap]; the cap when nothing is measured yet."""
    est = estimate(task, settings)
    return int(cap if est is None else max(OVERHEAD_S, min(cap, est)))


def check(task: str, settings: dict | None, cap: float) -> None:
    """`ValueError` before any work when the measured estimate is past the cap, naming the setting to lower."""
    est = estimate(task, settings)
    if est is None or est <= cap:
        return
    seconds = per_step(task)
    fits = max(1, int((cap - OVERHEAD_S) / (seconds * MARGIN)))
    raise ValueError(f"`num_steps` {settings['num_steps']} would take about {est:.0f} s here ({seconds:.3g} s per "
                     f"step, measured on this server), past the {cap:.0f} s a GPU is lent for: lower `num_steps` "
                     f"to {fits} or fewer")
