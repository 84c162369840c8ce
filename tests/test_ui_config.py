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
from pipelines.registry import get_task


def _choices(component) -> list:
    return [c[1] if isinstance(c, (list, tuple)) else c for c in component.choices]


def check_controls_match_configs(demo: gr.Blocks, cpu: bool, specs_for: dict | None = None) -> set[str]:
    """Assert every `TASK--FIELD` control equals the field's spec, and every task with controls on the page has a
    control for each of its page settings; returns the tasks found. `specs_for`: the specs a task's controls follow
    where they are not its class defaults (Text to Image follows the model family: `Text2ImageConfig.for_model`)."""
    specs_for = specs_for or {}

    def task_specs(task: str) -> dict:
        return specs_for.get(task) or get_task(task).specs()

    found: dict[str, set[str]] = {}
    for block in demo.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if "--" not in elem_id:
            continue
        task, name = elem_id.split("--", 1)
        spec = task_specs(task)[name]
        found.setdefault(task, set()).add(name)
        assert block.value == spec.start_value(cpu), elem_id
        if isinstance(block, gr.Slider):
            assert (block.minimum, block.maximum) == (spec.ui_lo, spec.ui_hi), elem_id
        elif isinstance(block, gr.Number):  # the task's check, not Gradio's, answers a value out of range
            assert (block.minimum, block.maximum) == (None, None), elem_id
            assert f"from {spec.ui_lo:.0f} to {spec.ui_hi:.0f}" in block.info, elem_id
        elif isinstance(block, gr.Dropdown):
            assert _choices(block) == list(spec.choices), elem_id
    # Every page setting of a task on the page has a control. Tasks of one tab share controls for what they share
    # (Latent Editing's seed and truncation pick the start for every edit), so any task's control of that name
    # counts; each such control was checked against its own config above.
    on_page = set().union(*found.values()) if found else set()
    for task in found:
        wanted = {n for n, s in task_specs(task).items() if s.control}
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


def test_every_model_endpoint_of_the_built_app_shares_one_queue():
    """Issue 17: "one GPU job at a time" was per endpoint; a CLIPDraw run held its queue while Lens ran beside."""
    from studio import app
    from studio.ui.common import GPU_QUEUE

    demo = app.build_app(clip="shapes-clip", device="cpu")
    groups = {fn.api_name: fn.concurrency_id for fn in demo.fns.values() if fn.api_name}
    for name in ("sketch_clipdraw", "sketch_clipasso", "lens_classify", "lens_search", "lens_arithmetic",
                 "latent_sample", "latent_invert", "latent_edit", "latent_global", "latent_relevance"):
        assert groups[name] == GPU_QUEUE, name
    assert groups["sketch_clipdraw_stop"] != GPU_QUEUE  # Stop never waits behind the run it stops


def test_two_endpoints_in_the_one_queue_never_run_at_once():
    import threading
    import time

    from conftest import launch_local
    from gradio_client import Client

    from studio.ui.common import gpu_bound, one_gpu_queue, run_handler

    spans, lock = [], threading.Lock()

    def work(name):
        t0 = time.monotonic()
        time.sleep(0.8)
        with lock:
            spans.append((t0, time.monotonic()))
        return name

    def streamed(x, flag):
        yield (work(x),)

    with gr.Blocks() as demo:
        box, out, tok = gr.Textbox(), gr.Textbox(), gr.State()
        gr.Button("a").click(run_handler(streamed), box, [tok, out], api_name="a")
        gr.Button("b").click(gpu_bound(work), box, out, api_name="b")
    assert one_gpu_queue(demo) == 2
    url = launch_local(demo)
    try:
        client = Client(url, verbose=False)
        jobs = [client.submit("x", api_name="/a"), client.submit("y", api_name="/b")]
        assert [j.result(timeout=60) for j in jobs][1] == "y"
    finally:
        demo.close()
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1 - 1e-3  # the second began only after the first had ended
