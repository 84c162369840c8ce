"""THE one loop over a task's generator, and the model pool. The page, `clip-studio run` (and its batch runner),
`clip-studio index` and the library's plain calls all drive tasks here; nothing else sends "stop" into one.

A task's generator yields `Progress` items and ends with its `Result` (`studio.progress`). `Run(gen, ...)` drives
it: iterating a `Run` gives the progress items (each with `item.clock` set: elapsed time, speed and ETA), between
steps it reads the Stop (a `StopFlag`, the page's Stop button, a SIGINT, a callback's False) and the run-time limit,
sends "stop" once either holds, and keeps the result in `run.result`. A finished run's seconds per step size the
next ZeroGPU lease of its task (`studio.lease`). `run(...)` is the same loop for callers that want only the result,
with the whole `Progress` handed to `on_progress`; `drain(gen, callback)` is the library's form of it, whose
`callback(step, total, preview)` (STYLE.md §7) returning False stops the run.

`ModelPool` builds pipelines with `Task.load` and keeps the last few resident (one lock; a pipeline whose CLIP was
the demo stand-in is built again once the real weights are there, or once its scorer was released).

No torch here: the page's modules import this.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator


# ------------------------------------------------------------------------------------------------------ the Stop
class StopFlag(threading.Event):
    """A run's Stop: set by the user's Stop button (or Ctrl-C, or a callback), or by the run-time limit.

    limit_s: the run is stopped once it has taken this many seconds since the flag was made (a public server's
    limit); `reason` then says why, and the runner adds it to the result's notice."""

    reason: str | None = None

    def __init__(self, limit_s: float | None = None) -> None:
        super().__init__()
        self.limit_s = limit_s
        self.started = time.monotonic()

    def stop(self, reason: str | None = None) -> None:
        if reason and not self.is_set():
            self.reason = reason
        self.set()

    def should_stop(self) -> bool:
        """Whether the run should stop now: the flag is set, or the time limit has passed (which sets it)."""
        if not self.is_set() and self.limit_s and time.monotonic() - self.started >= self.limit_s:
            self.stop(f"This server stops every run after {self.limit_s:g} s; the result so far is shown.")
        return self.is_set()


# ---------------------------------------------------------------------------------------------- elapsed, speed, ETA
def format_duration(seconds: float) -> str:
    """'7 s', '2:05', '1:02:03' (seconds are whole; a negative or unknown time is '?')."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = int(seconds + 0.5)  # half up (round() would make 22.5 s read 22 s)
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Clock:
    """Elapsed time, speed and ETA of a run, from the progress items seen so far.

    The speed is measured from the first step of the current stage (a multi-part run, e.g. an inversion before an
    edit, counts each part's steps on its own scale), so the time before the first step (loading a model, encoding
    prompts) does not count as slowness; the ETA is the current stage's remaining steps at that speed."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.started = now()
        self.step = 0
        self.total = 0
        self._base: tuple[str, int, int, float] | None = None  # (stage, total, step, time) the speed counts from
        self._last = self.started

    def tick(self, step: int, total: int, stage: str = "") -> Clock:
        self._last = self._now()
        if self._base is None or self._base[:2] != (stage, total) or step < self._base[2]:
            self._base = (stage, total, step, self._last)
        self.step, self.total = step, total
        return self

    @property
    def elapsed_s(self) -> float:
        return self._last - self.started

    @property
    def steps_per_s(self) -> float | None:
        """Steps per second over the current stage; None until two of its steps were seen."""
        if self._base is None:
            return None
        steps, seconds = self.step - self._base[2], self._last - self._base[3]
        return steps / seconds if steps > 0 and seconds > 0 else None

    @property
    def eta_s(self) -> float | None:
        speed = self.steps_per_s
        if speed is None:
            return None
        return max(0, self.total - self.step) / speed

    def line(self) -> str:
        """The one line every bar shows: 'elapsed 0:12 · 2.5 steps/s · ETA 0:30' (speed and ETA once known;
        a slow run reads in seconds per step)."""
        parts = [f"elapsed {format_duration(self.elapsed_s)}"]
        speed = self.steps_per_s
        if speed is not None:
            parts.append(f"{speed:.1f} steps/s" if speed >= 1 else f"{1 / speed:.1f} s/step")
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


# ---------------------------------------------------------------------------------------------------- the loop
class Run:
    """One run of a task generator. Iterate it for the progress items (each with `clock` set); afterwards
    `result` holds the task's result (its best so far when stopped).

    stop: a `StopFlag` (or any `threading.Event`), read between steps; `stop_now()` asks the same from inside the
    loop (a callback that returned False). limit_s: stop after this many seconds (also read between steps).
    Leaving the loop early, or closing the iterator, closes the task generator: nothing runs on after it."""

    def __init__(self, gen: Iterator[Any], stop: threading.Event | None = None, limit_s: float | None = None) -> None:
        self.gen = gen
        self.flag = stop if stop is not None else StopFlag()
        if limit_s and isinstance(self.flag, StopFlag) and not self.flag.limit_s:
            self.flag.limit_s = limit_s
        self.clock = Clock()
        self.result: Any = None

    def stop_now(self) -> None:
        self.flag.set()

    def _stopping(self) -> bool:
        return self.flag.should_stop() if isinstance(self.flag, StopFlag) else self.flag.is_set()

    def __iter__(self) -> Iterator[Any]:
        gen = self.gen
        try:
            item = next(gen)
            while not item.done:
                item.clock = self.clock.tick(item.step, item.total, getattr(item, "stage", ""))
                yield item
                item = gen.send("stop" if self._stopping() else None)
        finally:
            gen.close()
        self.result = _finish(item, self.flag)


def _finish(result: Any, flag: threading.Event) -> Any:
    """A finished run's bookkeeping: its seconds per step size the next lease of its task (only a run that ran to
    its end measures that), and a stop by the time limit says so in the result's notice."""
    timings = getattr(result, "timings", None)
    if isinstance(timings, dict) and getattr(result, "task", None) and not getattr(result, "stopped", False):
        from studio import lease

        lease.record(result.task, timings.get("per_step_s"))
    reason = getattr(flag, "reason", None)
    if reason and hasattr(result, "notice"):
        result.notice = f"{result.notice} {reason}" if result.notice else reason
    return result


def run(gen: Iterator[Any], on_progress: Callable[[Any], Any] | None = None, *, stop: threading.Event | None = None,
        limit_s: float | None = None) -> Any:
    """Drive a task generator to its result. `on_progress(progress)` receives every `Progress` (its `clock` set);
    returning False stops the run, which then ends with its best result so far."""
    r = Run(gen, stop, limit_s)
    for item in r:
        if on_progress is not None and on_progress(item) is False:
            r.stop_now()
    return r.result


def drain(gen: Iterator[Any], callback: Callable[[int, int, Any], Any] | None = None) -> Any:
    """The library's plain call: run a task generator to its result; `callback(step, total, preview)` returning
    False stops it (STYLE.md §7)."""
    return run(gen, None if callback is None else lambda p: callback(p.step, p.total, p.preview))


def drive(gen: Iterator[Any], flag: threading.Event, on_progress: Callable[[Any], Any],
          on_result: Callable[[Any], Any]) -> Iterator[Any]:
    """The page's form: yield `on_progress(item)` for each progress item and `on_result(result)` once. Closing this
    generator (the page went away) closes the task."""
    r = Run(gen, flag)
    steps = iter(r)
    try:
        for item in steps:
            yield on_progress(item)
    finally:
        steps.close()
    yield on_result(r.result)


# ------------------------------------------------------------------------------------------------ the model pool
class ModelPool:
    """Pipelines built by `Task.load`, the last `keep` of each loader resident (one lock for all loads; a StyleGAN2
    at 1024 or an OWL detector is large, so the page keeps one StyleCLIP pipeline and one detector).

    `get(task, **models)` returns the resident pipeline for (the task's `load`, its model specs), building it on
    first use; one whose CLIP is no longer the resident scorer of its key (the bundled demo model stood in and
    the real weights have arrived, or the scorer was released) is built again. `on_load(task, models)` is told
    before a build (the page shows a toast)."""

    def __init__(self, keep: int = 1, on_load: Callable[[Any, dict], None] | None = None) -> None:
        self.keep = keep
        self.on_load = on_load
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, task: Any, *, on_load: Callable[[], None] | None = None, **models: Any) -> Any:
        """The resident pipeline of `task.load(**models)` (`task`: a registered task, or a loader of its own such
        as a family's session-sharing facade), built now if needed (`on_load()`, else the pool's
        `on_load(task, models)`, is called first)."""
        load = getattr(task, "load", task)
        key = (load, tuple(sorted((k, repr(v)) for k, v in models.items())))
        with self._lock:
            pipe = self._pipes.get(key)
            if pipe is not None and not _stale(pipe):
                self._pipes.move_to_end(key)
                return pipe
            if on_load is not None:
                on_load()
            elif self.on_load is not None:
                self.on_load(task, models)
            pipe = load(**models)  # a failure keeps what was resident
            self._pipes.pop(key, None)
            self._pipes[key] = pipe
            same = [k for k in self._pipes if k[0] == key[0]]  # oldest first
            for old in same[:max(0, len(same) - self.keep)]:
                del self._pipes[old]
            return pipe

    def clear(self) -> None:
        with self._lock:
            self._pipes.clear()

    def __len__(self) -> int:
        return len(self._pipes)


def _stale(pipe: Any) -> bool:
    """Whether a pipeline's CLIP is no longer the resident scorer of its key: the demo model stood in and the real
    weights have since arrived (`get_scorer` swaps them), or the scorer was released to make room. Then the
    pipeline is built again, on the scorer `get_scorer` gives now."""
    scorer = getattr(pipe, "scorer", None)
    spec, device, dtype = (getattr(scorer, k, None) for k in ("spec", "device", "dtype"))
    if spec is None or device is None or dtype is None:
        return False
    from studio.device import precision_name
    from studio.scorer import get_scorer

    return get_scorer(spec, device=device, precision=precision_name(dtype)) is not scorer
