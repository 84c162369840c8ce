"""One parametrised test over every registered task: the run protocol holds for each of them.

Each area of the studio lists its tasks' cases in `tests/cases_<area>.py`: `CASES[name](scorer)` builds the task's
pipeline from tiny components and returns (pipeline, inputs, settings) for a two-step run; `FILES[name]` is the set
of file kinds its `save()` writes. A registered task without a case fails here.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.registry import get_task, task_names
from studio.progress import Progress, Result

HERE = Path(__file__).parent


def _cases() -> tuple[dict, dict]:
    cases, files = {}, {}
    for mod in pkgutil.iter_modules([str(HERE)]):
        if mod.name.startswith("cases_"):
            m = importlib.import_module(mod.name)  # tests/ is on sys.path (rootdir conftest)
            cases.update(m.CASES)
            files.update(m.FILES)
    return cases, files


CASES, FILES = _cases()


def test_every_registered_task_has_a_case():
    assert set(task_names()) == set(CASES), "every registered task needs a protocol case (tests/cases_*.py)"


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'nope'; valid tasks: .*clipdraw"):
        get_task("nope")


def _pixels(result: Result) -> np.ndarray:
    image = result.image if result.image is not None else result.images[0]
    return np.asarray(image)


@pytest.mark.parametrize("name", sorted(CASES))
def test_task_follows_the_run_protocol(name, demo_scorer, tmp_path):
    task = get_task(name)
    pipe, inputs, settings = CASES[name](demo_scorer)

    # progress items: steps 1..n, each with a PIL preview (two-step runs preview every step), then one Result
    items = list(task.iterate(pipe, **inputs, **settings))
    progress, result = items[:-1], items[-1]
    assert progress and all(isinstance(p, Progress) and not p.done for p in progress)
    steps = [p.step for p in progress]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] == progress[-1].total
    assert all(isinstance(p.preview, Image.Image) for p in progress if p.preview is not None)
    assert any(isinstance(p.preview, Image.Image) for p in progress)
    assert isinstance(result, Result) and result.done and not result.stopped
    assert result.image is not None or result.images
    assert all(k.endswith("_s") for k in result.timings), result.timings

    # settings: JSON-serialisable and enough to run it again: the same image for the same seed
    json.dumps(result.settings)
    json_inputs = {k for k in inputs if k in result.settings}
    again = task.run(pipe, **{k: v for k, v in inputs.items() if k not in json_inputs}, **result.settings)
    assert np.array_equal(_pixels(again), _pixels(result))

    # a stop after step 1 returns a result with stopped=True
    gen = task.iterate(pipe, **inputs, **settings)
    first = next(gen)
    assert first.step == 1
    stopped = gen.send("stop")
    while not stopped.done:  # a task may finish the step it is in
        stopped = gen.send("stop")
    gen.close()
    assert stopped.stopped and (stopped.image is not None or stopped.images or stopped.steps_run <= 1)

    # save() writes the task's files
    paths = result.save(tmp_path / name)
    kinds = {k.rstrip("0123456789") for k in paths}
    assert kinds >= FILES[name], paths
    assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in paths.values())
