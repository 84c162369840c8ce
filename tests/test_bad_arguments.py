"""Issue 17 #11: every bad argument to every registered task, from Python, is a `ValueError` naming it — before
any work, never a `TypeError`, an `AttributeError`, a NaN result or an unbounded run.

The tasks and their good inputs come from the run-protocol cases (tests/cases_*.py); each case is run once per
bad value with one input or setting replaced."""

from __future__ import annotations

import pytest
import torch
from test_run_protocol import CASES

from pipelines.registry import get_task

BAD_SETTINGS = {
    "int": ["x", 1.5, 2**70, float("nan"), [1]],
    "float": ["0.1", float("nan"), float("inf"), [0.1]],
    "bool": ["yes", 2],
    "choice": ["no-such-choice", 5],
    "text": [5, ["a"], "a \ud800"],  # issue 22 #8: a lone surrogate, which no PNG text chunk or file takes
    "tuple": [5, object()],
}
LONG = "a " * 60_000  # 120k characters


def bad_inputs(name: str, value):
    """Values that are wrong for an input whatever its kind, plus ones wrong for its value's kind."""
    out = [5, object()]
    if isinstance(value, str):
        out += [LONG, ["a", 5], "a red \ud800 circle"]
    if torch.is_tensor(value):
        out += [torch.full_like(value, float("nan")), value.new_zeros(value.shape[:-2] + (4096, 4096))]
    return out


def params():
    for task_name in sorted(CASES):
        task = get_task(task_name)
        for name, spec in task.specs().items():
            for bad in BAD_SETTINGS.get(spec.kind, []):
                if spec.kind == "int" and spec.nullable and bad is None:
                    continue
                yield pytest.param(task_name, "setting", name, bad, id=f"{task_name}-{name}-{bad!r:.20}")
            if spec.kind in ("int", "float") and spec.lo is not None and not spec.nullable:
                yield pytest.param(task_name, "setting", name, spec.lo - 1, id=f"{task_name}-{name}-below")


@pytest.mark.parametrize("task_name,where,name,bad", list(params()))
def test_a_bad_setting_is_a_value_error_naming_it(demo_scorer, task_name, where, name, bad):
    pipe, inputs, settings = CASES[task_name](demo_scorer)
    with pytest.raises(ValueError, match=f"`{name}`"):
        get_task(task_name).run(pipe, **inputs, **{**settings, name: bad})


@pytest.mark.parametrize("task_name", sorted(CASES))
def test_a_bad_input_is_a_value_error_naming_it(demo_scorer, task_name):
    pipe, inputs, settings = CASES[task_name](demo_scorer)
    failures = []
    for key, value in inputs.items():
        for bad in bad_inputs(key, value):
            try:
                get_task(task_name).run(pipe, **{**inputs, key: bad}, **settings)
            except ValueError as err:
                if f"`{key}`" not in str(err) and key not in str(err):
                    failures.append(f"{key}={bad!r:.30}: ValueError without the name: {err}")
                continue
            except Exception as err:  # noqa: BLE001 — what we are looking for
                failures.append(f"{key}={bad!r:.30}: {type(err).__name__}: {err!s:.120}")
                continue
            failures.append(f"{key}={bad!r:.30}: accepted")
    assert not failures, "\n".join(failures)

