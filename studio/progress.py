"""The run protocol every task shares: one progress item, one result base, and one thread bridge.

A task is a generator (`pipeline.iterate(...)` or a named `iter_*` method) that

* yields `Progress(step, total, preview, metrics)` items, `step` counting from 1 to `total`;
* accepts `"stop"` sent into it (or `close()`), after which it finishes with the best result so far;
* ends by yielding its `Result` (a subclass of `Result`), whose `done` is True.

`studio.runner` is the one loop that drives such a generator (the page, the command line, the library's plain
`__call__` API through `studio.runner.drain`, whose `callback(step, total, preview)` returning False stops the run,
STYLE.md §7). `iterate_callback` runs
callback-style library code (diffusers' per-step callback) in a worker thread and turns it into the same kind of
generator, so that Stop reaches the inside of a library call too.

`Result.save(folder)` writes the task's files through `studio.media`: `<task>.png` (or `<task>-<i>.png`) carrying
the task name, inputs, settings, seed and scores as PNG metadata, `<task>.svg` when the result has an SVG, and
`<task>.mp4` (or `.gif`) of the frames.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generator

import numpy as np
from PIL import Image

VIDEO_FORMATS = ("mp4", "gif")


@dataclass
class Progress:
    """One reported step of a running task.

    step: 1-based, at most `total`. preview: the current state as a PIL image, or None when this step has none.
    metrics: numbers worth showing (loss, score, ...). stage: which part of a multi-part run this step belongs to
    ("invert" before an edit, "relevance" before a global direction, "batch 2/4" of a generation), or "".
    clock: set by the runner (`studio.runner.Clock`): elapsed time, speed and ETA so far; None until driven.
    """

    step: int
    total: int
    preview: Image.Image | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stage: str = ""
    clock: Any = field(default=None, compare=False, repr=False)

    done: ClassVar[bool] = False


@dataclass
class Result:
    """What every task returns; each task's output extends it with fields of its own.

    image / images: the result as PIL (one, or several in order, best first where the task ranks them).
    frames: (H, W, 3) uint8 snapshots of the run, for a video. scores: named numbers (CLIPScore 0-100, losses).
    timings: seconds; every key ends in `_s`. seed: the seed that made it (the kept one, where several ran).
    settings: the JSON-serialisable keyword arguments that reproduce it: `task.iterate(pipe, **non_json_inputs,
    **settings)` gives the same result for the same seed (on the same device). stopped: ended early by the caller
    (the result is then the best so far). notice: something the user should know (a demo model stood in, ...).
    steps_run: steps done before the end or the stop.
    """

    image: Image.Image | None = None
    images: list[Image.Image] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False
    notice: str | None = None
    steps_run: int = 0

    done: ClassVar[bool] = True
    task: ClassVar[str] = "result"  # file stem and the `task` entry of the PNG metadata

    def metadata(self) -> dict[str, Any]:
        """What the PNG carries: the task, its settings (inputs included), seed and scores."""
        meta = {"task": self.task, **json_safe(self.settings), "seed": self.seed}
        meta["scores"] = {k: round(float(v), 4) for k, v in self.scores.items() if _finite(v)}
        return meta

    def svg_text(self) -> str | None:
        """The result as SVG markup, for tasks that draw vectors (None elsewhere)."""
        return getattr(self, "svg", None)

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        """Write the task's files into `folder` (a new temporary folder when None); returns {kind: path}.

        Kinds: "png" (or "png0", "png1", ... for several images), "svg" where there is one, "video" when the run
        kept frames. A task with more to write extends this and calls it first.
        """
        from studio.media import save_gif, save_mp4, save_png
        from studio.outputs import new_folder

        if video not in VIDEO_FORMATS:
            raise ValueError(f"`video` must be one of {VIDEO_FORMATS}, got {video!r}")
        out = Path(folder) if folder is not None else new_folder(self.task)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        meta = self.metadata()
        if self.image is not None:
            paths["png"] = save_png(self.image, out / f"{self.task}.png", meta)
        for i, im in enumerate(self.images if self.image is None else []):
            paths[f"png{i}"] = save_png(im, out / f"{self.task}-{i}.png", self.image_metadata(i))
        svg = self.svg_text()
        if svg is not None:
            paths["svg"] = out / f"{self.task}.svg"
            paths["svg"].write_text(svg, encoding="utf-8")
        if len(self.frames) > 1:
            paths["video"] = (save_mp4 if video == "mp4" else save_gif)(self.frames, out / f"{self.task}.{video}",
                                                                        fps=fps)
        return paths

    def save_latents(self, folder: str | Path) -> dict[str, Path]:
        """Write the result's latent (StyleCLIP: `latent`) or latents (Text to Image: `latents`, one per image) as
        `<task>-latent.safetensors` / `<task>-latents[-i].safetensors` into `folder`, so that a later run can start
        from them (`clip-studio run styleclip-edit --latent-or-image FILE`, `text2image-edit --latents FILE`; the
        batch command writes them beside `save()`'s files). Returns {kind: path}; empty for tasks without one."""
        import torch
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        info = {"task": self.task, "settings": json.dumps(json_safe(self.metadata()), sort_keys=True)}
        paths: dict[str, Path] = {}
        latent = getattr(self, "latent", None)
        if isinstance(latent, torch.Tensor):
            paths["latent"] = out / f"{self.task}-latent.safetensors"
            save_file({"latent": latent.detach().float().cpu().contiguous()}, str(paths["latent"]), metadata=info)
        latents = getattr(self, "latents", None)
        if isinstance(latents, torch.Tensor) and latents.ndim == 4 and len(latents):
            for i in range(len(latents)):
                key = "latents" if len(latents) == 1 else f"latents{i}"
                name = f"{self.task}-latents" + ("" if len(latents) == 1 else f"-{i}") + ".safetensors"
                paths[key] = out / name
                save_file({"latents": latents[i:i + 1].detach().float().cpu().contiguous()}, str(paths[key]),
                          metadata=info)
        return paths

    def image_metadata(self, i: int) -> dict[str, Any]:
        """Metadata of image `i` of several (tasks whose images differ, e.g. by seed, override it)."""
        return self.metadata()


def json_safe(value: Any) -> Any:
    """`value` with tuples as lists and numpy scalars as Python numbers, so that it survives JSON and compares
    equal after a round trip; anything else not JSON-serialisable raises TypeError naming it."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"setting of type {type(value).__name__} is not JSON-serialisable: {value!r:.80}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class Stopped(Exception):
    """Raised inside callback-style library code (from its step callback) to end a call the caller stopped."""


def iterate_callback(work: Callable[[Callable[..., None]], Any], progress: Callable[..., Progress]
                     ) -> Generator[Progress, str | None, tuple[Any, bool]]:
    """Run `work(report)` in a worker thread, yielding `progress(*args)` each time the work calls `report(*args)`.

    Returns (what `work` returned, or None if it was cut short; whether "stop" was sent). Sending "stop" or closing
    the generator makes the worker's next `report` raise `Stopped`, which `work` lets through; the generator then
    waits for the worker, so nothing runs on after it returns. The worker is at most one report ahead of the
    caller. An error in the worker is raised here (after a "stop" too; not on closing, which must not fail).
    """
    events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def report(*args: Any) -> None:
        events.put(("step", args))
        if stop.is_set():
            raise Stopped

    def run() -> None:
        try:
            if stop.is_set():
                raise Stopped
            events.put(("done", work(report)))
        except Stopped:
            events.put(("stopped", None))
        except BaseException as err:  # noqa: BLE001 — handed to the caller, which raises it
            events.put(("error", err))

    worker = threading.Thread(target=run, name="studio-task", daemon=True)
    worker.start()
    kind, payload = events.get()
    stopped = False
    try:
        while kind == "step":
            if (yield progress(*payload)) == "stop":
                stopped = True
                break
            kind, payload = events.get()
    finally:
        if kind == "step":  # stopped or closed mid-call: end the worker; it always ends with one more event
            stop.set()
            while kind == "step":
                kind, payload = events.get()
        worker.join()
    if kind == "error":
        raise payload
    return (payload if kind == "done" else None), stopped


def settings_json(settings: dict[str, Any]) -> str:
    """A canonical JSON text of settings (sorted keys), e.g. to hash or to compare two runs' settings."""
    return json.dumps(json_safe(settings), sort_keys=True)
