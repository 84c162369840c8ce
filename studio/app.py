"""CLIP Creative Studio: the web app (`python app.py`, the `clip-studio` command, or a Hugging Face Space).

This is the only place that joins models to the UI: each tab's `build(...)` receives plain functions made
here. Run `python app.py --help` for the flags; every flag has an environment variable too (see README).
The repository's top-level `app.py` (the Space's entry point) and the `clip-studio` command both call
`studio.cli.main`, whose serve command calls `serve` here (this module never imports the command line), so an
installed wheel carries the whole app.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable

import gradio as gr

from studio.defaults import DEMO_CLIP, DEMO_GENERATOR
from studio.device import pick_device
from studio.hub import clip_state
from studio.runner import ModelPool
from studio.scorer import available_specs, get_scorer, is_loaded
from studio.trust import Policy
from studio.ui import latent_editing as latent_ui
from studio.ui import lens as lens_ui
from studio.ui import text2image as t2i_ui
from studio.ui import vector_sketch as sketch_ui
from studio.ui.common import ServerLimits, name_input_errors, one_gpu_queue, page_text

log = logging.getLogger("studio")

try:  # On a ZeroGPU Space, GPU-bound handlers must be wrapped; elsewhere nothing changes.
    import spaces  # type: ignore
except ImportError:
    spaces = None


def _settings_of(args: tuple, kwargs: dict) -> dict:
    """An adapter's settings: its keyword arguments, or its last positional argument that is a dict."""
    if kwargs:
        return kwargs
    return next((a for a in reversed(args) if isinstance(a, dict)), {})


def gpu(fn: Callable | str) -> Callable:
    """Mark an adapter as GPU work for ZeroGPU (`@gpu`, or `@gpu("task")` to size its lease). On a ZeroGPU Space
    the function is wrapped with `spaces.GPU`; a named task asks for the duration `studio.lease` estimates from
    the seconds per step measured here (the cap before the first run), and a run whose estimate is past the cap
    (`STUDIO_GPU_MAX_S`) is refused before any work, naming `num_steps`. Elsewhere nothing changes."""
    if isinstance(fn, str):
        task = fn
        return lambda f: _gpu(f, task)
    return _gpu(fn, None)


def _gpu(fn: Callable, task: str | None) -> Callable:
    if spaces is None:
        return fn
    if task is None:
        return spaces.GPU(fn)
    from studio import lease

    cap = lease.max_duration(os.environ.get("STUDIO_MAX_RUN_S") and float(os.environ["STUDIO_MAX_RUN_S"]))
    leased = spaces.GPU(duration=lambda *a, **k: lease.duration(task, _settings_of(a, k), cap))(fn)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        lease.check(task, _settings_of(args, kwargs), cap)
        return leased(*args, **kwargs)

    return checked


def model_state(spec: str) -> str:
    """What a CLIP dropdown's choice will really run, shown before the first click."""
    return "Model: " + clip_state(spec)


def latent_state(generator: str, clip: str) -> str:
    """What the Latent Editing tab's generator and CLIP will really run, shown before the first click."""
    from studio.generators import generator_state

    return f"Generator: {generator_state(generator)}  \nCLIP: {clip_state(clip)}"


def make_lens_functions(device: str | None, policy: Policy | None = None, index: str | None = None) -> dict:
    """CLIP Lens handlers: classify returns the labels; search and arithmetic are the task generators. Every model
    spec is checked against the server's `policy` first (a public server loads only the operator's list).
    `image_search` ranks uploads by an uploaded image alone. `index`: the folder the server was started with
    (`--index DIR`; never one a visitor names): its search (text in rclip's form without paths, and/or an uploaded
    image) is `index["search"]`, on the CLIP that made the index; `index["update"]` re-indexes it (local servers
    only); no index given, no `index` entry."""
    from pipelines.lens import MAX_GALLERY, CLIPLensPipeline
    from pipelines.registry import get_task

    policy = policy or Policy()

    def pipe(spec: str) -> CLIPLensPipeline:
        return CLIPLensPipeline(get_scorer(policy.check_clip(spec), device=device))

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
        spec = policy.check_clip(spec)
        if is_loaded(spec, device=device):
            return None
        return "Loading CLIP " + clip_state(spec) + "…"

    @gpu
    def image_search(spec, files, query_image, **settings):
        return (yield from pipe(spec).iter_image_search(files, query_image, **settings))

    names = ("lens-classify", "lens-search", "lens-arithmetic", "lens-image-search", "lens-index", "lens-index-search")
    specs = {name: get_task(name).specs() for name in names}
    out = {"classify": classify, "search": search, "arithmetic": arithmetic, "image_search": image_search,
           "model_status": model_status, "specs": specs, "max_gallery": MAX_GALLERY}
    if index is not None:
        out["index"] = _index_functions(device, policy, index)
    return out


def _index_functions(device: str | None, policy: Policy, folder: str) -> dict:
    """The Lens tab's handlers for the server's image index (see `make_lens_functions`)."""
    from pipelines.lens_index import CLIPIndexPipeline
    from studio.index import ImageIndex, check_folder

    root = check_folder(folder, "--index")  # at start-up: a bad flag stops the server with its message

    def spec() -> str:  # the CLIP that made the index (the operator's choice), else the server's default
        return ImageIndex(root).clip_spec or policy.default_clip

    def pipe() -> CLIPIndexPipeline:
        # a visitor's text names no files; on a public server the results name no server folders either
        return CLIPIndexPipeline(get_scorer(spec(), device=device), allow_paths=False, relative_paths=policy.public)

    def describe() -> str:
        idx = ImageIndex(root)
        if not idx.exists():
            return f"Index of `{root.name}/`: not built yet" + ("" if policy.public else ": press Update the index")
        return (f"Index of `{root.name}/`: {idx.count()} images, CLIP `{idx.clip_spec}`"
                + (" (approximate search)" if idx.has_ann() else ""))

    @gpu
    def search(query, query_image, **settings):
        return (yield from pipe().iter_search(root, query, query_image, **settings))

    @gpu
    def update(**settings):
        return (yield from pipe().iter_index(root, **settings))

    return {"search": search, "update": None if policy.public else update, "describe": describe, "root": str(root)}


def make_lens_video_detect_functions(device: str | None, policy: Policy | None = None,
                                     pool: ModelPool | None = None) -> dict:
    """CLIP Lens's video moment search and open-vocabulary detection: the task generators on the shared scorer (or
    a locally present OWL-ViT, loaded once through the page's model `pool`), with their settings' specs and the
    detectors offered. CLIP specs are checked against the server's `policy`."""
    from pipelines.lens_detect import LensDetectPipeline, available_detectors
    from pipelines.lens_video import LensVideoPipeline
    from pipelines.registry import get_task
    from studio.media import VIDEO_SUFFIXES

    detectors = available_detectors()
    policy = policy or Policy()
    pool = pool or ModelPool()
    detect_task = get_task("lens-detect")

    def owl_pipeline(name: str) -> LensDetectPipeline:
        if name not in detectors:  # only what the operator's machine holds; never a typed path or a download
            raise ValueError(f"`detector` must be one of {detectors}, got {name!r}")
        return pool.get(detect_task, clip=None, detector=name, device=device)  # the pool keeps one detector

    @gpu
    def moments(spec, video, query, query_image, **settings):
        pipe = LensVideoPipeline(get_scorer(policy.check_clip(spec), device=device))
        return (yield from pipe.iter_search(video, query, query_image=query_image, **settings))

    @gpu
    def detect(spec, detector, image, queries, query_image, **settings):
        if detector in (None, "", "clip"):
            pipe = LensDetectPipeline(get_scorer(policy.check_clip(spec), device=device))
        else:
            pipe = owl_pipeline(detector)
        return (yield from pipe.iter_detect(image, queries, query_image=query_image, **settings))

    return {"video": {"run": moments, "specs": get_task("lens-video").specs(), "suffixes": list(VIDEO_SUFFIXES)},
            "detect": {"run": detect, "specs": get_task("lens-detect").specs(), "detectors": detectors}}


def make_sketch_functions(device: str | None, policy: Policy | None = None) -> dict[str, Callable]:
    """CLIPDraw, CLIPasso and Vectorize handlers: the registered tasks' generators, on the shared scorers (specs
    checked against the server's `policy`; Vectorize loads its CLIP only for a run with a CLIP term)."""
    from pipelines.registry import get_task

    draw, sketch, vec = get_task("clipdraw"), get_task("clipasso"), get_task("vectorize")
    policy = policy or Policy()

    @gpu("clipdraw")
    def clipdraw(spec, prompt, init_svg, settings):
        pipe = draw.pipeline(get_scorer(policy.check_clip(spec), device=device))
        return (yield from draw.iterate(pipe, prompt=prompt, init_svg=init_svg, **settings))

    @gpu("clipasso")
    def clipasso(spec, loss_spec, image, settings):
        spec = policy.check_clip(spec)
        loss_spec = policy.check_clip(loss_spec, "loss_model", tuple(policy.loss_choices())) if loss_spec else None
        loss = get_scorer(loss_spec, device=device) if loss_spec else None
        pipe = sketch.pipeline(get_scorer(spec, device=device), loss)
        return (yield from sketch.iterate(pipe, image=image, **settings))

    @gpu
    def vectorize(spec, image, settings):
        scorer = get_scorer(policy.check_clip(spec), device=device) if settings.get("clip_weight") else None
        pipe = vec.pipeline(scorer, device=device)
        return (yield from vec.iterate(pipe, image=image, **settings))

    def check_svg(text: str) -> None:  # an uploaded start SVG, read as the run will read it (refused at upload)
        from pipelines.clipdraw import read_init_svg

        read_init_svg(text, 64)

    return {"clipdraw": clipdraw, "clipasso": clipasso, "draw_specs": draw.specs(), "sketch_specs": sketch.specs(),
            "check_svg": check_svg, "vectorize": vectorize, "vectorize_specs": vec.specs()}


LATENT_TASKS = ("styleclip-edit", "styleclip-global", "styleclip-invert", "styleclip-relevance")
MAPPER_TASKS = ("styleclip-mapper", "styleclip-mapper-apply")  # StyleCLIP's latent mapper: train, apply


def make_latent_functions(device: str | None, policy: Policy | None = None, pool: ModelPool | None = None) -> dict:
    """StyleCLIP handlers for the Latent Editing tab; one pipeline (generator + CLIP) is kept, replaced when the
    user picks another pair. The runs (invert, edit, relevance, global_edit) return the pipeline's task generators
    (`Progress` items, then the result), which the tab drives with its Stop; `sample` is one generator pass.

    The tab's state is `{"generator", "clip", "result"}`: the last sample, inversion or edit, which the next edit
    starts from (an edit's own start, so that edits do not pile up); a state from another generator or CLIP is
    ignored and the seed decides the start. `specs` are the tasks' settings, for the tab's controls. The generator
    and CLIP specs are checked against the server's `policy` before anything loads; `pool`: the page's model
    pool."""
    from pipelines.registry import get_task
    from pipelines.styleclip import (
        GlobalDirectionOutput,
        InversionOutput,
        LatentEditOutput,
        SampleOutput,
        StyleCLIPPipeline,
    )
    from studio.generators import generator_state

    policy = policy or Policy()
    pool = pool or ModelPool()

    def get_pipeline(generator: str, clip: str) -> StyleCLIPPipeline:
        generator, clip = policy.check_generator(generator), policy.check_clip(clip)
        # Built on first use, and again when its CLIP is no longer the resident one (the demo model stood in and
        # the real weights have since arrived, or the scorer was released); the pool keeps one (a StyleGAN2 at
        # 1024 is large), and a failure keeps the old.
        def announce() -> None:
            gr.Info(page_text(f"Loading generator {generator_state(generator)}; CLIP {clip_state(clip)}…"))

        return pool.get(StyleCLIPPipeline.from_pretrained, generator=generator, clip=clip, device=device,
                        on_load=announce)

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

    @gpu("styleclip-invert")
    def invert(generator, clip, image, settings):
        if image is None:
            raise ValueError("`image` is missing: upload an image to invert")
        yield from get_pipeline(generator, clip).iter_invert(image, **settings)

    @gpu("styleclip-edit")
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

    # StyleCLIP's latent mapper, on the same generator and CLIP: the mapper to apply is the one trained on the page
    # (the tab keeps its result) or an uploaded file (ours, or a StyleCLIP .pt checkpoint, converted once), refused
    # when it was trained for another generator
    from pipelines.styleclip_mapper import StyleCLIPMapperPipeline

    @gpu("styleclip-mapper")
    def train_mapper(generator, clip, prompt, settings):
        pipe = StyleCLIPMapperPipeline.from_pipe(get_pipeline(generator, clip))
        yield from pipe.iter_train_mapper(prompt, **settings)

    @gpu
    def apply_mapper(generator, clip, state, trained, upload, settings):
        mapper = upload or trained
        if mapper is None:
            raise ValueError("`mapper` is missing: train a mapper first, or upload a mapper (.safetensors, or a "
                             "StyleCLIP .pt checkpoint)")
        pipe = StyleCLIPMapperPipeline.from_pipe(get_pipeline(generator, clip))
        yield from pipe.iter_apply_mapper(start(generator, clip, state), mapper, **settings)

    return {"sample": sample, "invert": invert, "edit": edit, "relevance": relevance, "global_edit": global_edit,
            "train_mapper": train_mapper, "apply_mapper": apply_mapper,
            "specs": {name: get_task(name).specs() for name in LATENT_TASKS + MAPPER_TASKS}}


def make_text2image_functions(device: str | None, clip: str) -> dict:
    """Text-to-image handlers that load the diffusers model on first use (start-up stays fast), with the settings
    of the model's family (`Text2ImageConfig.for_model`, read without loading it) for the tab's controls.

    When the model is neither a local folder nor cached and cannot be downloaded, the bundled demo model
    `shapes-diffusion` stands in, and the line under the tab's title says so before the first click (what was tried,
    how to supply the model), as the demo CLIP does; without it the tab shows why instead.
    """
    import threading

    from pipelines.registry import get_task
    from pipelines.text2image import Text2ImageConfig, Text2ImagePipeline
    from pipelines.text2image_models import (
        DEFAULT_MODEL,
        DEMO_MODEL,
        MULTI_STEP_PRESET,
        demo_model_folder,
        demo_notice,
        preset_for,
        resolve_pipeline,
    )
    from studio.hub import WeightsNotFoundError, diffusers_state, hf_cached_file, hub_reachable, offline
    from studio.tasks import specs

    name = os.environ.get("STUDIO_T2I_MODEL") or DEFAULT_MODEL
    stand_in: str | None = None  # the notice, when the demo model stands in for `name`

    def t2i_state() -> str:  # what will really run, shown before the first click (asked again on each page load)
        model = stand_in or diffusers_state(name)
        return f"Model: {model}  \nCLIP (reranking): {clip_state(clip)}"

    local = (name == DEMO_MODEL or os.path.isdir(os.path.expanduser(name))
             or hf_cached_file(name, ("model_index.json",)) is not None)
    if not local and (offline() or not hub_reachable()):
        try:
            resolve_pipeline(name)  # raises without downloading, naming what was tried and how to supply it
        except WeightsNotFoundError as err:
            if not (demo_model_folder() / "model_index.json").is_file():
                return {"load_error": str(err), "model": name, "model_state": t2i_state}
            stand_in = demo_notice(name, err.tried, err.how)
            name = DEMO_MODEL
        except (RuntimeError, ValueError, OSError) as err:
            return {"load_error": str(err), "model": name, "model_state": t2i_state}
    task_specs = {"text2image": specs(Text2ImageConfig.for_model(name)),
                  "text2image-refine": get_task("text2image-refine").specs(),
                  "text2image-edit": get_task("text2image-edit").specs(),
                  # the picture tasks' settings are the model family's too (read without loading it)
                  **{task: specs(get_task(task).config.for_model(name))
                     for task in ("text2image-img2img", "text2image-inpaint")}}
    state: dict = {}
    lock = threading.Lock()

    def pipeline() -> Text2ImagePipeline:
        with lock:
            if "pipe" not in state:
                gr.Info(page_text(f"Loading {diffusers_state(name)}…"))
                state["pipe"] = Text2ImagePipeline.from_pretrained(name, scorer=get_scorer(clip, device=device),
                                                                   device=device)
            pipe = state["pipe"]
            if pipe.scorer is not None and pipe.scorer.is_demo:  # the real CLIP, once its weights have arrived
                pipe.scorer = get_scorer(clip, device=device)
            return pipe

    @gpu
    def generate(*args, **kwargs):
        return (yield from pipeline().iter_generate(*args, **kwargs))

    @gpu("text2image-refine")
    def refine(*args, **kwargs):
        return (yield from pipeline().iter_refine(*args, **kwargs))

    @gpu("text2image-edit")
    def edit(*args, **kwargs):
        return (yield from pipeline().iter_edit(*args, **kwargs))

    # img2img and inpaint: their task classes on the same session (from_pipe: no second copy of the weights)
    @gpu("text2image-img2img")
    def img2img(*args, **kwargs):
        return (yield from pipeline().task("text2image-img2img").iter_img2img(*args, **kwargs))

    @gpu("text2image-inpaint")
    def inpaint(*args, **kwargs):
        return (yield from pipeline().task("text2image-inpaint").iter_inpaint(*args, **kwargs))

    return {"generate": generate, "refine": refine, "edit": edit, "img2img": img2img, "inpaint": inpaint,
            "specs": task_specs, "model": name,
            "clip_model": clip, "one_step": (preset_for(name) or MULTI_STEP_PRESET).one_step,
            "model_state": t2i_state}


def _on_cpu(dev) -> bool:
    return dev.type == "cpu"


def build_app(clip: str | None = None, device: str | None = None, policy: Policy | None = None,
              index: str | None = None) -> gr.Blocks:
    """The studio's Blocks. `clip`: the CLIP spec(s) offered, comma-separated, the first being the default;
    `device` as `studio.device.pick_device` takes it; `policy`: what visitors may choose (`studio.trust`; by
    default public on a Space, where SPACE_ID is set, else local); `index`: a folder whose image index the Lens tab
    searches (`--index DIR`, env STUDIO_INDEX)."""
    policy = policy or Policy.from_settings(clip=clip)
    clip = policy.default_clip
    dev = pick_device(device)
    device = str(dev)
    cpu = _on_cpu(dev)  # controls start at settings a CPU finishes in minutes
    choices = policy.clip_choices(available_specs())
    custom = policy.custom_values  # model dropdowns take typed values (a local server)
    ttl = policy.output_ttl_s
    cache = (int(min(ttl, 3600)), int(ttl)) if ttl else None  # Gradio's own cache: (every N s, older than M s)
    pool = ModelPool()  # the page's resident pipelines (one per loader), built by the tasks' `load`
    with gr.Blocks(title="CLIP Creative Studio", delete_cache=cache) as demo:
        gr.Markdown(f"# CLIP Creative Studio\nCLIP-driven creation · running on **{device}** · default CLIP "
                    f"`{clip}`" + (" · public server: models from the operator's list" if policy.public else ""))
        with gr.Tabs() as tabs:
            lens = make_lens_functions(device, policy, index or os.environ.get("STUDIO_INDEX") or None)
            lens_ui.build(lens["classify"], lens["search"], lens["arithmetic"], choices, clip, lens["model_status"],
                          specs=lens["specs"], max_gallery=lens["max_gallery"], model_state=model_state,
                          image_search=lens["image_search"], index=lens.get("index"),
                          custom_models=custom, **make_lens_video_detect_functions(device, policy, pool))
            from pipelines.clipdraw import COLOR_MODES

            sketch = make_sketch_functions(device, policy)
            picture_to_svg = sketch_ui.build(
                sketch["clipdraw"], sketch["clipasso"], choices, clip, lens["model_status"],
                draw_specs=sketch["draw_specs"], sketch_specs=sketch["sketch_specs"],
                colour_modes=list(COLOR_MODES), loss_model_choices=policy.loss_choices(),
                cpu=cpu, model_state=model_state, check_svg=sketch["check_svg"],
                vectorize=sketch["vectorize"], vectorize_specs=sketch["vectorize_specs"],
                custom_models=custom)
            # "Vectorize selected" in Text to Image fills Vector Sketch's Picture → SVG and goes there
            target = picture_to_svg and {**picture_to_svg, "tabs": [tabs, picture_to_svg["tabs"]],
                                         "ids": [sketch_ui.SKETCH_TAB, sketch_ui.VECTORIZE_TAB]}
            t2i_ui.build(**make_text2image_functions(device, clip), vectorize_target=target)
            from studio.generators import available_generators

            generator = policy.default_generator
            latent_ui.build(**make_latent_functions(device, policy, pool),
                            generator_choices=policy.generator_choices(available_generators()),
                            default_generator=generator, clip_choices=choices,
                            default_clip=DEMO_CLIP if generator == DEMO_GENERATOR else clip, cpu=cpu,
                            model_state=latent_state, custom_models=custom)
    # one GPU job at a time across every tab, not per endpoint; every handler gets the server's limits
    one_gpu_queue(demo, ServerLimits(custom_models=custom, max_run_s=policy.max_run_s, delete_uploads=policy.public))
    name_input_errors(demo)  # what Gradio refuses before a handler is named like our own checks
    return demo


def server_policy(args) -> Policy:
    """The trust level and limits from the serve flags (`studio.cli.parse_serve_args`) and the environment."""
    return Policy.from_settings(public=True if args.public else None, clip=args.clip, generators=args.generator,
                                max_upload_mb=args.max_upload_mb, max_run_s=args.max_run_s,
                                output_ttl_s=args.output_ttl_s, max_waiting=getattr(args, "max_waiting", None),
                                upload_budget_mb=getattr(args, "upload_budget_mb", None))


def queue(demo: gr.Blocks, policy: Policy, concurrency: int = 1, max_queue: int | None = 32) -> gr.Blocks:
    """`demo.queue(...)` with the policy's share per visitor (`studio.ui.guard.share_queue`)."""
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    if policy.max_waiting:
        from studio.ui.guard import share_queue

        share_queue(demo, policy.max_waiting)
    return demo


def launch_options(policy: Policy) -> dict:
    """`demo.launch` arguments that carry the policy: Gradio refuses bigger uploads before any handler runs; on a
    public server the upload route is bounded in count, request size and total (`studio.ui.guard.UploadGuard`)."""
    options = {"max_file_size": int(policy.max_upload_mb * 1024 * 1024), "show_error": True}
    if policy.public:
        from starlette.middleware import Middleware

        from studio.outputs import gradio_cache
        from studio.ui.guard import UploadGuard

        per_request = int(policy.max_upload_mb * 1024 * 1024 * 4) + 65536  # four files at the cap, and the framing
        budget = int(policy.upload_budget_mb * 1024 * 1024) if policy.upload_budget_mb else None
        options["app_kwargs"] = {"middleware": [Middleware(UploadGuard, max_files=policy.max_upload_files,
                                                           max_request_bytes=per_request, budget_bytes=budget,
                                                           folder=gradio_cache)]}
    return options


def serve(args, prog: str = "clip-studio") -> None:
    """Start the web app with flags parsed by `studio.cli.parse_serve_args`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        policy = server_policy(args)
        demo = build_app(device=args.device, policy=policy, index=getattr(args, "index", None))
    except ValueError as err:  # a bad flag or setting: say which, without a traceback
        raise SystemExit(f"{prog}: error: {err}") from None
    log.info("%s", policy.describe())
    if policy.output_ttl_s:
        from studio.outputs import start_sweeper

        start_sweeper(policy.output_ttl_s)
    queue(demo, policy, args.concurrency, args.max_queue)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options(policy))
