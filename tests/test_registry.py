"""The one task table (`pipelines/registry.py`): every name it lists is declared by the module it names, with the
class it names; `pipelines`' exports are its classes; asking for one task imports only that task's module."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pipelines
from pipelines.registry import BATCHING, TABLE, exports, get_task, task_names


def test_every_task_in_the_table_is_declared_by_its_module_with_its_class():
    assert task_names() == sorted(TABLE) and len(TABLE) >= 22
    for name, (target, batched) in TABLE.items():
        task = get_task(name)
        assert f"{task.pipeline.__module__}:{task.pipeline.__qualname__}" == target
        assert (task.batch_method is not None) == batched and task.batching == BATCHING
    assert BATCHING == ("clipdraw",)
    assert {getattr(pipelines, cls).__module__ for cls in pipelines.__all__} == set(exports().values())
    assert {"StyleCLIPPipeline", "Text2ImagePipeline", "CLIPDrawPipeline"} <= set(pipelines.__all__)
    with pytest.raises(ValueError, match="unknown task 'nope'; valid tasks: clipasso, clipdraw"):
        get_task("nope")


def test_a_task_outside_the_table_is_refused():
    from pipelines.registry import register

    task = get_task("clipasso")
    import dataclasses

    with pytest.raises(ValueError, match="not in pipelines/registry.py's TABLE"):
        register(dataclasses.replace(task, name="clipasso-2"))
    with pytest.raises(ValueError, match="the table says pipelines.clipasso:CLIPassoPipeline"):
        register(dataclasses.replace(task, batch_method="iterate_seeds"))


def test_asking_for_one_task_imports_only_its_module():
    code = ("import sys\nfrom pipelines.registry import get_task, task_names\nassert len(task_names()) >= 22\n"
            "assert 'torch' not in sys.modules\nget_task('lens-classify')\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipelines.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['pipelines.lens', 'pipelines.registry']"
