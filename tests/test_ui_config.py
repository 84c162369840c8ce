"""The page restates no default: every control made for a task setting equals its config field, and the UI
modules never import torch or the pipelines (STYLE.md §6: the UI receives functions, not models)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import gradio as gr
import pytest

import studio.ui
from studio.tasks import get_task


def _choices(component) -> list:
    return [c[1] if isinstance(c, (list, tuple)) else c for c in component.choices]


def check_controls_match_configs(demo: gr.Blocks, cpu: bool) -> set[str]:
    """Assert every `TASK--FIELD` control equals the field's spec, and every task with controls on the page has a
    control for each of its page settings; returns the tasks found."""
    found: dict[str, set[str]] = {}
    for block in demo.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if "--" not in elem_id:
            continue
        task, name = elem_id.split("--", 1)
        spec = get_task(task).specs()[name]
        found.setdefault(task, set()).add(name)
        assert block.value == spec.start_value(cpu), elem_id
        if isinstance(block, gr.Slider):
            assert (block.minimum, block.maximum) == (spec.ui_lo, spec.ui_hi), elem_id
        elif isinstance(block, gr.Number):
            assert (block.minimum, block.maximum) == (spec.ui_lo, spec.ui_hi), elem_id
        elif isinstance(block, gr.Dropdown):
            assert _choices(block) == list(spec.choices), elem_id
    # Every page setting of a task on the page has a control. Tasks of one tab share controls for what they share
    # (Latent Editing's seed and truncation pick the start for every edit), so any task's control of that name
    # counts; each such control was checked against its own config above.
    on_page = set().union(*found.values()) if found else set()
    for task in found:
        wanted = {n for n, s in get_task(task).specs().items() if s.control}
        assert wanted <= on_page, f"{task}: no control for {sorted(wanted - on_page)}"
    return set(found)


@pytest.mark.parametrize("cpu", [False, True])
def test_every_control_of_the_built_app_equals_its_config(cpu, monkeypatch):
    from studio import app

    monkeypatch.setattr(app, "_on_cpu", lambda dev: cpu, raising=False)
    demo = app.build_app(clip="shapes-clip", device="cpu")
    tasks = check_controls_match_configs(demo, cpu)
    assert {"clipdraw", "clipasso"} <= tasks


def test_no_ui_module_imports_torch_or_the_pipelines():
    names = [f"studio.ui.{m.name}" for m in pkgutil.iter_modules(studio.ui.__path__)]
    assert len(names) >= 5
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'pipelines')\n"
            "    assert not bad, f'{name} imports {bad[:3]}'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in names:  # they import in this process too
        importlib.import_module(name)
