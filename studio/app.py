"""CLIP Creative Studio: the web app (`python app.py`, the `clip-studio` command, or a Hugging Face Space).

This is the only place that joins models to the UI: each tab's `build(...)` receives plain functions made
here. Run `python app.py --help` for the flags; every flag has an environment variable too (see README).
The repository's top-level `app.py` (the Space's entry point) only calls `main` here, so an installed wheel
carries the whole app.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Callable

import gradio as gr

from studio.device import pick_device
from studio.images import load_image
from studio.scorer import available_specs, get_scorer, is_loaded
from studio.ui import latent_editing as latent_ui
from studio.ui import lens as lens_ui
from studio.ui import text2image as t2i_ui
from studio.ui import vector_sketch as sketch_ui

log = logging.getLogger("studio")

try:  # On a ZeroGPU Space, GPU-bound handlers must be wrapped; elsewhere nothing changes.
    import spaces  # type: ignore

    gpu: Callable[[Callable], Callable] = spaces.GPU
except ImportError:
    def gpu(fn: Callable) -> Callable:
        return fn


def _gallery_item(path: str, caption: str):
    return (load_image(path, "images"), caption)


def make_lens_functions(device: str | None) -> dict[str, Callable]:
    from pipelines.lens import CLIPLensPipeline

    def pipe(spec: str) -> CLIPLensPipeline:
        return CLIPLensPipeline(get_scorer(spec, device=device))

    @gpu
    def classify(spec, image, labels_text):
        out = pipe(spec).classify(image, labels_text)
        return {"labels": list(zip(out.labels, out.probs)), "notice": out.notice}

    @gpu
    def search(spec, files, query):
        out = pipe(spec).search(files, query)
        return {"gallery": [_gallery_item(files[i], f"{s:.1f}") for i, s in zip(out.order, out.scores)],
                "notice": out.notice}

    @gpu
    def arithmetic(spec, files, query_image, minus, plus, weight):
        out = pipe(spec).arithmetic(files, query_image, minus, plus, weight)
        return {"gallery": [_gallery_item(files[i], f"{s:.1f}") for i, s in zip(out.order, out.scores)],
                "notice": out.notice}

    def model_status(spec):
        if is_loaded(spec, device=device):
            return None
        return f"Loading CLIP {spec!r} (first use: loading weights, or downloading them once)…"

    return {"classify": classify, "search": search, "arithmetic": arithmetic, "model_status": model_status}


def make_sketch_functions(device: str | None) -> dict[str, Callable]:
    """CLIPDraw and CLIPasso handlers: generators that stream progress and return the result."""
    from pipelines.clipasso import CLIPassoPipeline
    from pipelines.clipdraw import CLIPDrawPipeline

    @gpu
    def clipdraw(spec, options):
        return (yield from CLIPDrawPipeline(get_scorer(spec, device=device)).iterate(**options))

    @gpu
    def clipasso(spec, loss_spec, options):
        loss = get_scorer(loss_spec, device=device) if loss_spec else None
        return (yield from CLIPassoPipeline(get_scorer(spec, device=device), loss).iterate(**options))

    return {"clipdraw": clipdraw, "clipasso": clipasso}


def make_latent_functions(device: str | None) -> dict[str, Callable]:
    """StyleCLIP handlers; one pipeline (generator + CLIP) is kept, replaced when the user picks another pair."""
    import threading

    from pipelines.styleclip import StyleCLIPPipeline, make_ui_functions

    pipes: dict = {}
    lock = threading.Lock()

    def get_pipeline(generator: str, clip: str) -> StyleCLIPPipeline:
        with lock:
            pipe = pipes.get((generator, clip))
            # Build on first use, and again when the pipeline's CLIP is no longer the resident one (the demo model
            # stood in and the real weights have since arrived, or the scorer was released to make room).
            if pipe is None or pipe.scorer is not get_scorer(clip, device=device):
                gr.Info(f"Loading generator {generator!r} and CLIP {clip!r} (first use: a registry checkpoint "
                        "is downloaded once)…")
                pipe = StyleCLIPPipeline.from_pretrained(generator, clip, device=device)  # a failure keeps the old
                pipes.clear()  # a StyleGAN2 at 1024 is large: keep one
                pipes[(generator, clip)] = pipe
            return pipe

    return make_ui_functions(get_pipeline, wrap=gpu)


def make_text2image_functions(device: str | None, clip: str) -> dict:
    """Text-to-image handlers that load the diffusers model on first use (start-up stays fast), with the settings
    of the model's family (`Text2ImageConfig.for_model`, read without loading it) for the tab's controls.

    When the model is neither a local folder nor cached and cannot be downloaded, the tab shows why instead.
    """
    import threading

    from pipelines.text2image import Text2ImageConfig, Text2ImagePipeline
    from pipelines.text2image_models import DEFAULT_MODEL, MULTI_STEP_PRESET, preset_for, resolve_pipeline
    from studio.hub import hf_cached_file, hub_reachable, offline
    from studio.tasks import get_task, specs

    name = os.environ.get("STUDIO_T2I_MODEL") or DEFAULT_MODEL
    local = os.path.isdir(os.path.expanduser(name)) or hf_cached_file(name, ("model_index.json",)) is not None
    if not local and (offline() or not hub_reachable()):
        try:
            resolve_pipeline(name)  # raises without downloading, naming what was tried and how to supply it
        except (RuntimeError, ValueError, OSError) as err:
            return {"load_error": str(err), "model": name}
    task_specs = {"text2image": specs(Text2ImageConfig.for_model(name)),
                  "text2image-refine": get_task("text2image-refine").specs(),
                  "text2image-edit": get_task("text2image-edit").specs()}
    state: dict = {}
    lock = threading.Lock()

    def pipeline() -> Text2ImagePipeline:
        with lock:
            if "pipe" not in state:
                gr.Info(f"Loading {name} (first use: loading the weights, or downloading them once)…")
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
            "clip_model": clip, "one_step": (preset_for(name) or MULTI_STEP_PRESET).one_step}


def build_app(clip: str | None = None, device: str | None = None) -> gr.Blocks:
    """The studio's Blocks. `clip` is the default CLIP spec; `device` as `studio.device.pick_device` takes it."""
    clip = clip or os.environ.get("STUDIO_CLIP") or "ViT-B-32/openai"
    dev = pick_device(device)
    device = str(dev)
    choices = available_specs()
    if clip not in choices:
        choices.insert(0, clip)
    with gr.Blocks(title="CLIP Creative Studio") as demo:
        gr.Markdown(f"# CLIP Creative Studio\nCLIP-driven creation · running on **{device}** · default CLIP "
                    f"`{clip}`")
        with gr.Tabs():
            lens = make_lens_functions(device)
            lens_ui.build(lens["classify"], lens["search"], lens["arithmetic"], choices, clip, lens["model_status"])
            sketch = make_sketch_functions(device)
            sketch_ui.build(sketch["clipdraw"], sketch["clipasso"], choices, clip, lens["model_status"],
                            loss_model_choices=["RN101/openai", "RN50/openai"], cpu=dev.type == "cpu")
            t2i_ui.build(**make_text2image_functions(device, clip))
            from studio.generators import available_generators

            generator = os.environ.get("STUDIO_STYLEGAN") or "demo-shapes"
            latent_ui.build(**make_latent_functions(device), generator_choices=available_generators(),
                            default_generator=generator, clip_choices=choices,
                            default_clip="shapes-clip" if generator == "demo-shapes" else clip)
    return demo


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description="CLIP Creative Studio")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for all); env GRADIO_SERVER_NAME")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port; env GRADIO_SERVER_PORT")
    p.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    p.add_argument("--device", default=os.environ.get("STUDIO_DEVICE"),
                   help="auto, cpu, cuda[:N], mps; env STUDIO_DEVICE")
    p.add_argument("--clip", default=os.environ.get("STUDIO_CLIP"),
                   help="default CLIP: ARCH/TAG (ViT-B-32/openai), ARCH:/path/weights, or shapes-clip; env STUDIO_CLIP")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("STUDIO_CONCURRENCY", "1")),
                   help="jobs running at once (one GPU job at a time by default); env STUDIO_CONCURRENCY")
    p.add_argument("--max-queue", type=int, default=int(os.environ.get("STUDIO_MAX_QUEUE", "32")),
                   help="requests waiting before new ones are turned away; env STUDIO_MAX_QUEUE")
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error(f"--concurrency must be at least 1, got {args.concurrency}")
    return args


def main(argv: list[str] | None = None, prog: str = "clip-studio") -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv, prog)
    try:
        demo = build_app(clip=args.clip, device=args.device)
    except ValueError as err:  # a bad flag or setting: say which, without a traceback
        raise SystemExit(f"{prog}: error: {err}") from None
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True)


if __name__ == "__main__":
    main()
