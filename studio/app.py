"""CLIP Creative Studio: the web app (`python app.py`, the `clip-studio` command, or a Hugging Face Space).

This is the only place that joins models to the UI: each tab's `build(...)` receives plain functions made
here. Run `python app.py --help` for the flags; every flag has an environment variable too (see README).
The repository's top-level `app.py` (the Space's entry point) only calls `main` here, so an installed wheel
carries the whole app.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import gradio as gr

from studio.device import pick_device
from studio.hub import clip_state
from studio.scorer import available_specs, get_scorer, is_loaded
from studio.ui import latent_editing as latent_ui
from studio.ui import lens as lens_ui
from studio.ui import text2image as t2i_ui
from studio.ui import vector_sketch as sketch_ui
from studio.ui.common import one_gpu_queue

log = logging.getLogger("studio")

try:  # On a ZeroGPU Space, GPU-bound handlers must be wrapped; elsewhere nothing changes.
    import spaces  # type: ignore

    gpu: Callable[[Callable], Callable] = spaces.GPU
except ImportError:
    def gpu(fn: Callable) -> Callable:
        return fn


def model_state(spec: str) -> str:
    """What a CLIP dropdown's choice will really run, shown before the first click."""
    return "Model: " + clip_state(spec)


def latent_state(generator: str, clip: str) -> str:
    """What the Latent Editing tab's generator and CLIP will really run, shown before the first click."""
    from studio.generators import generator_state

    return f"Generator: {generator_state(generator)}  \nCLIP: {clip_state(clip)}"


def make_lens_functions(device: str | None) -> dict:
    """CLIP Lens handlers: classify returns the labels; search and arithmetic are the task generators."""
    from pipelines.lens import MAX_GALLERY, CLIPLensPipeline
    from studio.tasks import get_task

    def pipe(spec: str) -> CLIPLensPipeline:
        return CLIPLensPipeline(get_scorer(spec, device=device))

    @gpu
    def classify(spec, image, labels_text, **settings):
        out = pipe(spec).classify(image, labels_text, **settings)
        return {"labels": list(zip(out.labels, out.probs)), "notice": out.notice}

    @gpu
    def search(spec, files, query, **settings):
        return (yield from pipe(spec).iter_search(files, query, **settings))

    @gpu
    def arithmetic(spec, files, query_image, minus, plus, **settings):
        return (yield from pipe(spec).iter_arithmetic(files, query_image, minus, plus, **settings))

    def model_status(spec):
        """The toast of a first use, worded for what will happen (issue 16: it promised a download offline)."""
        if is_loaded(spec, device=device):
            return None
        return "Loading CLIP " + clip_state(spec) + "…"

    specs = {name: get_task(name).specs() for name in ("lens-classify", "lens-search", "lens-arithmetic")}
    return {"classify": classify, "search": search, "arithmetic": arithmetic, "model_status": model_status,

            "specs": specs, "max_gallery": MAX_GALLERY}


def make_sketch_functions(device: str | None) -> dict[str, Callable]:
    """CLIPDraw and CLIPasso handlers: the registered tasks' generators, on the shared scorers."""
    from studio.tasks import get_task

    draw, sketch = get_task("clipdraw"), get_task("clipasso")

    @gpu
    def clipdraw(spec, prompt, init_svg, settings):
        pipe = draw.pipeline(get_scorer(spec, device=device))
        return (yield from draw.iterate(pipe, prompt=prompt, init_svg=init_svg, **settings))

    @gpu
    def clipasso(spec, loss_spec, image, settings):
        loss = get_scorer(loss_spec, device=device) if loss_spec else None
        pipe = sketch.pipeline(get_scorer(spec, device=device), loss)
        return (yield from sketch.iterate(pipe, image=image, **settings))

    return {"clipdraw": clipdraw, "clipasso": clipasso, "draw_specs": draw.specs(), "sketch_specs": sketch.specs()}


LATENT_TASKS = ("styleclip-edit", "styleclip-global", "styleclip-invert", "styleclip-relevance")


def make_latent_functions(device: str | None) -> dict:
    """StyleCLIP handlers for the Latent Editing tab; one pipeline (generator + CLIP) is kept, replaced when the
    user picks another pair. The runs (invert, edit, relevance, global_edit) return the pipeline's task generators
    (`Progress` items, then the result), which the tab drives with its Stop; `sample` is one generator pass.

    The tab's state is `{"generator", "clip", "result"}`: the last sample, inversion or edit, which the next edit
    starts from (an edit's own start, so that edits do not pile up); a state from another generator or CLIP is
    ignored and the seed decides the start. `specs` are the tasks' settings, for the tab's controls."""
    import threading

    from pipelines.styleclip import (
        GlobalDirectionOutput,
        InversionOutput,
        LatentEditOutput,
        SampleOutput,
        StyleCLIPPipeline,
    )
    from studio.generators import generator_state
    from studio.tasks import get_task

    pipes: dict = {}
    lock = threading.Lock()

    def get_pipeline(generator: str, clip: str) -> StyleCLIPPipeline:
        with lock:
            pipe = pipes.get((generator, clip))
            # Build on first use, and again when the pipeline's CLIP is no longer the resident one (the demo model
            # stood in and the real weights have since arrived, or the scorer was released to make room).
            if pipe is None or pipe.scorer is not get_scorer(clip, device=device):
                gr.Info(f"Loading generator {generator_state(generator)}; CLIP {clip_state(clip)}…")
                pipe = StyleCLIPPipeline.from_pretrained(generator, clip, device=device)  # a failure keeps the old
                pipes.clear()  # a StyleGAN2 at 1024 is large: keep one
                pipes[(generator, clip)] = pipe
            return pipe

    def start(generator: str, clip: str, state) -> object:
        """What an edit starts from, from the tab's state (None: a random start from the seed)."""
        if not isinstance(state, dict) or (state.get("generator"), state.get("clip")) != (generator, clip):
            return None
        result = state.get("result")
        if isinstance(result, (SampleOutput, InversionOutput)):
            return result
        if isinstance(result, LatentEditOutput):
            return result.inversion or result.start_latent
        if isinstance(result, GlobalDirectionOutput):
            return result.inversion or result.latent
        return None

    @gpu
    def sample(generator, clip, settings):
        return get_pipeline(generator, clip).sample(**settings)

    @gpu
    def invert(generator, clip, image, settings):
        if image is None:
            raise ValueError("`image` is missing: upload an image to invert")
        yield from get_pipeline(generator, clip).iter_invert(image, **settings)

    @gpu
    def edit(generator, clip, state, prompt, settings):
        pipe = get_pipeline(generator, clip)
        yield from pipe.iter_edit(start(generator, clip, state), prompt, **settings)

    @gpu
    def relevance(generator, clip, settings):
        yield from get_pipeline(generator, clip).iter_relevance(**settings)

    @gpu
    def global_edit(generator, clip, state, neutral, target, settings):
        pipe = get_pipeline(generator, clip)
        yield from pipe.iter_global_direction(start(generator, clip, state), neutral, target, **settings)

    return {"sample": sample, "invert": invert, "edit": edit, "relevance": relevance, "global_edit": global_edit,
            "specs": {name: get_task(name).specs() for name in LATENT_TASKS}}


def make_text2image_functions(device: str | None, clip: str) -> dict:
    """Text-to-image handlers that load the diffusers model on first use (start-up stays fast), with the settings
    of the model's family (`Text2ImageConfig.for_model`, read without loading it) for the tab's controls.

    When the model is neither a local folder nor cached and cannot be downloaded, the tab shows why instead.
    """
    import threading

    from pipelines.text2image import Text2ImageConfig, Text2ImagePipeline
    from pipelines.text2image_models import DEFAULT_MODEL, MULTI_STEP_PRESET, preset_for, resolve_pipeline
    from studio.hub import diffusers_state, hf_cached_file, hub_reachable, offline
    from studio.tasks import get_task, specs

    name = os.environ.get("STUDIO_T2I_MODEL") or DEFAULT_MODEL

    def t2i_state() -> str:  # what will really run, shown before the first click (asked again on each page load)
        return f"Model: {diffusers_state(name)}  \nCLIP (reranking): {clip_state(clip)}"

    local = os.path.isdir(os.path.expanduser(name)) or hf_cached_file(name, ("model_index.json",)) is not None
    if not local and (offline() or not hub_reachable()):
        try:
            resolve_pipeline(name)  # raises without downloading, naming what was tried and how to supply it
        except (RuntimeError, ValueError, OSError) as err:
            return {"load_error": str(err), "model": name, "model_state": t2i_state}
    task_specs = {"text2image": specs(Text2ImageConfig.for_model(name)),
                  "text2image-refine": get_task("text2image-refine").specs(),
                  "text2image-edit": get_task("text2image-edit").specs()}
    state: dict = {}
    lock = threading.Lock()

    def pipeline() -> Text2ImagePipeline:
        with lock:
            if "pipe" not in state:
                gr.Info(f"Loading {diffusers_state(name)}…")
                state["pipe"] = Text2ImagePipeline.from_pretrained(name, scorer=get_scorer(clip, device=device),
                                                                   device=device)
            pipe = state["pipe"]
            if pipe.scorer is not None and pipe.scorer.is_demo:  # the real CLIP, once its weights have arrived
                pipe.scorer = get_scorer(clip, device=device)
            return pipe

    @gpu
    def generate(*args, **kwargs):
        return (yield from pipeline().iter_generate(*args, **kwargs))

    @gpu
    def refine(*args, **kwargs):
        return (yield from pipeline().iter_refine(*args, **kwargs))

    @gpu
    def edit(*args, **kwargs):
        return (yield from pipeline().iter_edit(*args, **kwargs))

    return {"generate": generate, "refine": refine, "edit": edit, "specs": task_specs, "model": name,
            "clip_model": clip, "one_step": (preset_for(name) or MULTI_STEP_PRESET).one_step,
            "model_state": t2i_state}


def _on_cpu(dev) -> bool:
    return dev.type == "cpu"


def build_app(clip: str | None = None, device: str | None = None) -> gr.Blocks:
    """The studio's Blocks. `clip` is the default CLIP spec; `device` as `studio.device.pick_device` takes it."""
    clip = clip or os.environ.get("STUDIO_CLIP") or "ViT-B-32/openai"
    dev = pick_device(device)
    device = str(dev)
    cpu = _on_cpu(dev)  # controls start at settings a CPU finishes in minutes
    choices = available_specs()
    if clip not in choices:
        choices.insert(0, clip)
    with gr.Blocks(title="CLIP Creative Studio") as demo:
        gr.Markdown(f"# CLIP Creative Studio\nCLIP-driven creation · running on **{device}** · default CLIP "
                    f"`{clip}`")
        with gr.Tabs():
            lens = make_lens_functions(device)
            lens_ui.build(lens["classify"], lens["search"], lens["arithmetic"], choices, clip, lens["model_status"],
                          specs=lens["specs"], max_gallery=lens["max_gallery"], model_state=model_state)
            from pipelines.clipdraw import COLOR_MODES

            sketch = make_sketch_functions(device)
            sketch_ui.build(sketch["clipdraw"], sketch["clipasso"], choices, clip, lens["model_status"],
                            draw_specs=sketch["draw_specs"], sketch_specs=sketch["sketch_specs"],
                            colour_modes=list(COLOR_MODES), loss_model_choices=["RN101/openai", "RN50/openai"],
                            cpu=cpu, model_state=model_state)
            t2i_ui.build(**make_text2image_functions(device, clip))
            from studio.generators import available_generators

            generator = os.environ.get("STUDIO_STYLEGAN") or "demo-shapes"
            latent_ui.build(**make_latent_functions(device), generator_choices=available_generators(),
                            default_generator=generator, clip_choices=choices,
                            default_clip="shapes-clip" if generator == "demo-shapes" else clip,
                            model_state=latent_state)
    one_gpu_queue(demo)  # one GPU job at a time across every tab, not per endpoint
    return demo


def serve(args, prog: str = "clip-studio") -> None:
    """Start the web app with flags parsed by `studio.cli.parse_serve_args`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = build_app(clip=args.clip, device=args.device)
    except ValueError as err:  # a bad flag or setting: say which, without a traceback
        raise SystemExit(f"{prog}: error: {err}") from None
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True)


def parse_args(argv: list[str] | None = None, prog: str | None = None):
    from studio.cli import parse_serve_args

    return parse_serve_args(argv, prog)


def main(argv: list[str] | None = None, prog: str = "clip-studio") -> None:
    """`clip-studio` (see `studio.cli`): the web app, or `run TASK ...`."""
    from studio.cli import main as cli_main

    cli_main(argv, prog)


if __name__ == "__main__":
    main()
