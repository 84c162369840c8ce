"""The one table of the studio's tasks: task name → the pipeline class that runs it, as "module:Class", imported on
first use. The task's declaration (config with defaults and limits, inputs, models, `load`) stands next to its
class, in that module's `register(Task(...))`; `pipelines`' exports come from this table too.

The faces (the page, the command line, the batch runner) ask here: `get_task(name)` imports only the module that
declares `name`; `task_names()` reads the table and imports nothing. The core (`studio.tasks`) only declares what a
task is and never imports this package.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading

from studio.tasks import Task

# name: ("module:Class", runs several seeds together: the class's `iterate_seeds`, Task.batch_method)
TABLE: dict[str, tuple[str, bool]] = {
    "clipdraw": ("pipelines.clipdraw:CLIPDrawPipeline", True),
    "clipasso": ("pipelines.clipasso:CLIPassoPipeline", False),
    "vectorize": ("pipelines.vectorize:VectorizePipeline", False),
    "lens-classify": ("pipelines.lens:CLIPLensPipeline", False),
    "lens-search": ("pipelines.lens:CLIPLensPipeline", False),
    "lens-arithmetic": ("pipelines.lens:CLIPLensPipeline", False),
    "lens-image-search": ("pipelines.lens:CLIPLensPipeline", False),
    "lens-detect": ("pipelines.lens_detect:LensDetectPipeline", False),
    "lens-index": ("pipelines.lens_index:CLIPIndexPipeline", False),
    "lens-index-search": ("pipelines.lens_index:CLIPIndexPipeline", False),
    "lens-video": ("pipelines.lens_video:LensVideoPipeline", False),
    "styleclip-sample": ("pipelines.styleclip_sample:StyleCLIPSamplePipeline", False),
    "styleclip-edit": ("pipelines.styleclip_edit:StyleCLIPEditPipeline", False),
    "styleclip-invert": ("pipelines.styleclip_invert:StyleCLIPInvertPipeline", False),
    "styleclip-global": ("pipelines.styleclip_global:StyleCLIPGlobalPipeline", False),
    "styleclip-relevance": ("pipelines.styleclip_global:StyleCLIPGlobalPipeline", False),
    "styleclip-mapper": ("pipelines.styleclip_mapper:StyleCLIPMapperPipeline", False),
    "styleclip-mapper-apply": ("pipelines.styleclip_mapper:StyleCLIPMapperPipeline", False),
    "text2image": ("pipelines.text2image:Text2ImagePipeline", False),
    "text2image-refine": ("pipelines.text2image_refine:Text2ImageRefinePipeline", False),
    "text2image-edit": ("pipelines.text2image_edit:Text2ImageEditPipeline", False),
    "text2image-img2img": ("pipelines.text2image_img2img:Text2ImageImg2ImgPipeline", False),
    "text2image-inpaint": ("pipelines.text2image_inpaint:Text2ImageInpaintPipeline", False),
}
# classes outside the table that `pipelines` offers too: a family's facade over its tasks on one session
FACADES = {"StyleCLIPPipeline": "pipelines.styleclip"}
BATCHING = tuple(name for name, (_, batched) in TABLE.items() if batched)  # named in Task.check_batch's refusal

_TASKS: dict[str, Task] = {}
_LOCK = threading.RLock()  # a module imported under it registers its tasks under it


def exports() -> dict[str, str]:
    """Class name → module of every pipeline class in the table and of the facades (what `from pipelines import X`
    offers)."""
    out: dict[str, str] = dict(FACADES)
    for target, _ in TABLE.values():
        module, _, cls = target.partition(":")
        out.setdefault(cls, module)
    return out


def register(task: Task) -> Task:
    """Add a task (called by its module, next to its class, at import). A name the table lacks, another class
    than the table's, or one name registered twice by two classes is a bug."""
    if task.name not in TABLE:
        raise ValueError(f"task {task.name!r} is not in pipelines/registry.py's TABLE; add it there")
    target, batched = TABLE[task.name]
    if f"{task.pipeline.__module__}:{task.pipeline.__qualname__}" != target or batched != bool(task.batch_method):
        raise ValueError(f"task {task.name!r} registers {task.pipeline.__module__}:{task.pipeline.__qualname__} "
                         f"(batched: {bool(task.batch_method)}); the table says {target} (batched: {batched})")
    with _LOCK:
        existing = _TASKS.get(task.name)
        if existing is not None and existing.pipeline.__qualname__ != task.pipeline.__qualname__:
            raise ValueError(f"task {task.name!r} is registered twice ({existing.pipeline} and {task.pipeline})")
        _TASKS[task.name] = dataclasses.replace(task, batching=BATCHING)
        return _TASKS[task.name]


def task_names() -> list[str]:
    return sorted(TABLE)


def get_task(name: str) -> Task:
    """The registered task called `name`, its module imported on first use; an unknown name lists the valid
    ones."""
    if name not in TABLE:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TABLE))}")
    with _LOCK:
        if name not in _TASKS:
            module = TABLE[name][0].partition(":")[0]
            importlib.import_module(module)
            if name not in _TASKS:
                raise RuntimeError(f"{module} does not register task {name!r}, which the table says it declares")
        return _TASKS[name]
