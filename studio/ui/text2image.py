"""Text to Image tab: generate with diffusers, rerank by CLIP, refine (ReNO) and edit (directional CLIP).

`build(...)` receives plain callables and the tasks' setting specs and never imports torch or the pipelines;
`studio/app.py` joins them to a `Text2ImagePipeline`:

    build(generate=t2i.iter_generate, refine=t2i.iter_refine, edit=t2i.iter_edit,
          specs={"text2image": specs(Text2ImageConfig.for_model(name)), "text2image-refine": ...,
                 "text2image-edit": ...}, model=name, clip_model=clip, one_step=preset.one_step)

Every setting's control comes from its spec (`studio.ui.common.control`: default, range, choices), so the page
offers exactly what the model family's config allows. Each callable returns a task generator on the run protocol
(`studio.progress`): progress items, then the result. The one Stop (`studio.ui.common`) sends "stop" into the
running task, which ends with what it has: the finished images of a generation, the best iterate of a refine or
an edit, shown with their downloads.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import gradio as gr
import numpy as np

from studio.media import read_png_metadata
from studio.tasks import check_value
from studio.ui.common import (
    control,
    drive,
    image_upload,
    model_state_line,
    page_text,
    progress_html,
    run_handler,
    setup_error,
    stop_button,
    user_errors,
)

GENERATE, REFINE, EDIT = "text2image", "text2image-refine", "text2image-edit"
IMG2IMG, INPAINT = "text2image-img2img", "text2image-inpaint"
TASKS = (GENERATE, REFINE, EDIT, IMG2IMG, INPAINT)
FROM_PICTURE = (IMG2IMG, INPAINT)  # the tasks that start from the picture in the editor
MAX_HISTORY = 64  # images kept in the session history gallery
# PNGs saved before the run protocol (studio 0.1) name some settings differently: old key -> new key.
LEGACY_KEYS = {"tool": "task", "steps": "num_steps", "negative_prompt": "negative_prompts"}
# The settings of a refine PNG that are the generation's (the image it refined); the rest are refine controls.
SHARED = ("seed", "width", "height")


def control_names(task_specs: dict[str, Any]) -> list[str]:
    """The settings of a task that the page shows, in the config's order."""
    return [name for name, spec in task_specs.items() if spec.control]


def restore_keys(specs: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(task, name) of every control an uploaded PNG can set, in the order of `Handlers.restore`'s outputs
    ("ui" marks page-only controls); the picture tasks' controls come last, where the page has them."""
    return ([(GENERATE, "prompt"), ("ui", "random_seed")] + [(GENERATE, n) for n in control_names(specs[GENERATE])]
            + [(REFINE, n) for n in control_names(specs[REFINE])] + [(EDIT, "edit_prompt")]
            + [(EDIT, n) for n in control_names(specs[EDIT])]
            + [(task, n) for task in FROM_PICTURE if task in specs for n in control_names(specs[task])])


def controls_from_metadata(meta: dict | None, specs: dict[str, dict[str, Any]]
                           ) -> tuple[dict[tuple[str, str], Any], list[str]]:
    """The controls a PNG saved here sets, {(task, name): value}, each checked against its spec, and the settings
    it holds that this page cannot take (as "name: why"). A generation PNG sets the generation's controls; a refine
    PNG its prompt, seed and size there and the refine controls; an edit PNG the prompt, edit text and edit
    controls; an img2img or inpaint PNG the prompt and its own task's controls."""
    if not isinstance(meta, dict):
        raise ValueError("this PNG carries no Text to Image settings (only PNGs saved by this tab do)")
    legacy = "tool" in meta
    meta = {LEGACY_KEYS.get(k, k): v for k, v in meta.items()}
    task = meta.get("task")
    if task not in TASKS:
        raise ValueError("this PNG carries no Text to Image settings (only PNGs saved by this tab do)")
    prompt = meta.get("source_prompt", meta.get("prompt")) if task == EDIT else meta.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("this PNG's Text to Image settings lack a prompt")
    wanted: dict[tuple[str, str], Any] = {}
    for name, value in meta.items():
        if task == GENERATE or (task == REFINE and name in SHARED):
            wanted[(GENERATE, name)] = value
        elif task in (REFINE, *FROM_PICTURE) or (task == EDIT and not legacy):  # (a 0.1 edit PNG's strength
            wanted[(task, name)] = value  # meant something else)
    values: dict[tuple[str, str], Any] = {(GENERATE, "prompt"): prompt}
    if task == EDIT and isinstance(meta.get("edit_prompt"), str):
        values[(EDIT, "edit_prompt")] = meta["edit_prompt"]
    skipped = []
    for (owner, name), value in wanted.items():
        spec = specs.get(owner, {}).get(name)
        if spec is None or not spec.control:
            continue
        try:
            values[(owner, name)] = check_value(spec, value)
        except ValueError as err:
            skipped.append(f"{name}: {err}")
    return values, skipped


def editor_background(picture: Any) -> Any:
    """The picture an `ImageEditor` holds (its background: a path or an image), refused by name when there is none."""
    background = picture.get("background") if isinstance(picture, dict) else picture
    if background is None:
        raise gr.Error("Upload a picture first (the image editor is empty)", title="No picture")
    return background


def painted_mask(picture: Any) -> Any:
    """The mask painted in an `ImageEditor`: white (255) where any layer is opaque, as an "L" image; None when
    nothing is painted. Layers are read with the same pixel bound as every upload."""
    from PIL import Image

    from studio.images import MAX_PIXELS

    union = None
    for layer in (picture.get("layers") or []) if isinstance(picture, dict) else []:
        img = layer if isinstance(layer, Image.Image) else Image.open(layer)
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise gr.Error(f"The painted layer is {img.size[0]}×{img.size[1]} pixels, too large")
        opaque = np.asarray(img.convert("RGBA"))[..., 3] >= 128
        union = opaque if union is None else union | opaque
    if union is None or not union.any():
        return None
    return Image.fromarray(union.astype(np.uint8) * 255)


def _caption(meta: dict) -> str:
    score = (meta.get("scores") or {}).get("clip_score")
    return f"seed {meta.get('seed')}" + (f" · CLIP {score:.2f}" if isinstance(score, (int, float)) else "")


def _gallery(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["path"], r["caption"]) for r in records]


def _bar(result: Any, total: int) -> str:
    if result.stopped:
        return progress_html(result.steps_run, total, "", "stopped")
    return progress_html(total, total, "", "done")


class Handlers:
    """The tab's event handlers as plain generator functions (testable without a browser). Each run handler takes
    the Stop flag as `flag` (see `studio.ui.common.run_handler`) and yields the values of its outputs."""

    def __init__(self, generate: Callable[..., Iterator] | None, refine: Callable[..., Iterator] | None,
                 edit: Callable[..., Iterator] | None, specs: dict[str, dict[str, Any]], *,
                 load_error: str | None = None, img2img: Callable[..., Iterator] | None = None,
                 inpaint: Callable[..., Iterator] | None = None):
        self.generate_fn, self.refine_fn, self.edit_fn = generate, refine, edit
        self.img2img_fn, self.inpaint_fn = img2img, inpaint
        self.specs = specs
        self.names = {task: control_names(specs[task]) for task in TASKS if task in specs}
        self.load_error = load_error
        offered = {IMG2IMG: img2img, INPAINT: inpaint}
        # what an uploaded PNG can set: the controls the page has (the picture tasks' only where they are offered)
        self.restore_specs = {t: sp for t, sp in specs.items() if offered.get(t, True) is not None}

    def _check_loaded(self, fn: Callable | None, what: str) -> None:
        if self.load_error:
            raise setup_error(self.load_error)  # stays on the page until dismissed, like every setup problem
        if fn is None:
            raise gr.Error(f"{what} is not available for this model", title="Not available")

    # ---- generate ---------------------------------------------------------------------------------------
    def generate(self, prompt, random_seed, history, *values, flag):
        """Inputs: prompt, random seed, history, then the generation controls (`names["text2image"]`). Yields
        (gallery, files, info, seed, current records, history gallery, history records, progress, preview)."""
        self._check_loaded(self.generate_fn, "Generation")
        settings = dict(zip(self.names[GENERATE], values))
        if random_seed or settings.get("seed") is None:
            spec = self.specs[GENERATE]["seed"]
            settings["seed"] = random.randint(int(spec.lo), int(spec.hi))
        seed = int(settings["seed"])
        yield from self._run_images(self.generate_fn(prompt, **settings), seed, history, flag)

    @staticmethod
    def _generated(result: Any, seed: int, history: list[dict], total: int) -> tuple:
        skip = gr.skip()
        if not result.images:
            return (skip, skip, "Stopped before the first image was finished", seed, skip, skip, skip,
                    _bar(result, total), skip)
        paths = result.save()
        records = []
        for i in range(len(result.images)):
            meta = result.image_metadata(i)
            latents = getattr(result, "latents", None)  # an inpainted image has none: edit takes its picture
            records.append({"path": str(paths[f"png{i}"]), "caption": _caption(meta), "meta": meta,
                            "latent": latents[i] if latents is not None else str(paths[f"png{i}"]),
                            "prompt": result.prompt})
        history = (records + history)[:MAX_HISTORY]
        info = f"{len(records)} image(s) · seeds {min(result.seeds)}…{max(result.seeds)}"
        if result.clip_scores:
            info += " · sorted by CLIP score" if getattr(result, "reranked", False) else " · CLIP scores in captions"
        if result.notice:
            info += f" · {result.notice}"
        if result.stopped:
            info += " · stopped early"
        return (_gallery(records), [r["path"] for r in records], info, seed, records, _gallery(history), history,
                _bar(result, total), skip)

    # ---- img2img and inpaint: from the picture in the editor ------------------------------------------------
    def img2img(self, picture, prompt, history, *values, flag):
        """Inputs: the editor's value (its background is the start image), the prompt, history, then the img2img
        controls. Yields the outputs of `generate` (the seed being img2img's own control)."""
        self._check_loaded(self.img2img_fn, "img2img")
        settings = dict(zip(self.names[IMG2IMG], values))
        image = editor_background(picture)
        yield from self._run_images(self.img2img_fn(image, prompt, **settings), int(settings["seed"]), history,
                                      flag)

    def inpaint(self, picture, mask_upload, prompt, history, *values, flag):
        """Inputs: the editor's value (its background is the image, its painted layers the mask), an uploaded mask
        (used instead of the painted one when given), the prompt, history, then the inpaint controls. Yields the
        outputs of `generate` (the seed being inpaint's own control)."""
        self._check_loaded(self.inpaint_fn, "Inpainting")
        settings = dict(zip(self.names[INPAINT], values))
        image = editor_background(picture)
        mask = mask_upload or painted_mask(picture)
        yield from self._run_images(self.inpaint_fn(image, prompt, mask, **settings), int(settings["seed"]),
                                      history, flag)

    def _run_images(self, run: Iterator, seed: int, history, flag):
        """A run that makes images (generate, img2img, inpaint): its bar and preview every step, then its results
        as `generate`'s outputs."""
        history = list(history or [])
        total = [0]

        def on_progress(item):
            total[0] = item.total
            text = item.stage
            if item.metrics.get("batch_steps", 1) > 1:
                text += f" · step {int(item.metrics['batch_step'])}/{int(item.metrics['batch_steps'])}"
            if "clip_score" in item.metrics:
                text += f" · best CLIP {item.metrics['clip_score']:.2f}"
            skip = gr.skip()
            bar = progress_html(item.step, item.total, text, clock=item.clock)
            return (skip, skip, skip, seed, skip, skip, skip, bar, item.preview if item.preview is not None else skip)

        yield from drive(run, flag, on_progress, lambda result: self._generated(result, seed, history, total[0]))

    # ---- refine -----------------------------------------------------------------------------------------
    def refine(self, records, selected, history, *values, flag):
        """Inputs: the current records, the selected one, history, then the refine controls. Yields (preview,
        before/after, info, files, history gallery, history records, progress). A generated (or refined) image is
        refined from its seed, an img2img or inpaint result from its picture."""
        self._check_loaded(self.refine_fn, "Refine")
        record = self._selected(records, selected)
        meta = record["meta"]
        settings = dict(zip(self.names[REFINE], values))
        if meta.get("task") in FROM_PICTURE:  # no seed makes it: refined from its picture
            settings["image"] = record["path"]
        elif meta.get("task") == EDIT or "seed" not in meta:
            raise gr.Error("Refine starts from the seed of a generated (or refined) image, or from an img2img or "
                           "inpaint result's picture; pick one of those")
        else:
            settings.update(seed=int(meta["seed"]), width=int(meta["width"]), height=int(meta["height"]))
        history = list(history or [])
        total = [0]
        skip = gr.skip()

        def on_progress(item):
            total[0] = item.total
            text = f"Refining · CLIP {item.metrics['clip_score']:.2f} (best {item.metrics['best_clip_score']:.2f})"
            return (item.preview if item.preview is not None else skip, skip, skip, skip, skip, skip,
                    progress_html(item.step, item.total, text, clock=item.clock))

        def on_result(result):
            paths = result.save()
            before, after = result.scores["clip_score_before"], result.scores["clip_score"]
            record = {"path": str(paths["png"]), "caption": f"refined · CLIP {after:.2f}", "meta": result.metadata(),
                      "latent": result.latents[0], "prompt": result.prompt}
            hist = ([record] + history)[:MAX_HISTORY]
            info = (f"CLIP score {before:.2f} → {after:.2f} (best at step {result.best_step}"
                    f"{', stopped early' if result.stopped else ''})")
            return (result.image, (result.start_image, result.image), info, [str(p) for p in paths.values()],
                    _gallery(hist), hist, _bar(result, total[0]))

        yield from drive(self.refine_fn(record["prompt"], **settings), flag, on_progress, on_result)

    # ---- edit -------------------------------------------------------------------------------------------
    def edit(self, records, selected, edit_prompt, history, *values, flag):
        """Inputs: the current records, the selected one, the edit text, history, then the edit controls. Yields
        (preview, before/after, info, files, history gallery, history records, progress)."""
        self._check_loaded(self.edit_fn, "Edit")
        record = self._selected(records, selected)
        settings = dict(zip(self.names[EDIT], values))
        history = list(history or [])
        total = [0]
        skip = gr.skip()

        def on_progress(item):
            total[0] = item.total
            text = f"Editing · direction {item.metrics['directional']:.3f}"
            return (item.preview if item.preview is not None else skip, skip, skip, skip, skip, skip,
                    progress_html(item.step, item.total, text, clock=item.clock))

        def on_result(result):
            paths = result.save()
            rec = {"path": str(paths["png"]), "caption": f"edit: {result.edit_prompt}", "meta": result.metadata(),
                   "latent": result.latents[0], "prompt": result.edit_prompt}
            hist = ([rec] + history)[:MAX_HISTORY]
            info = (f"Directional CLIP {result.scores['directional']:.3f} · CLIP score for “{result.edit_prompt}” "
                    f"{result.scores['clip_score_before']:.2f} → {result.scores['clip_score']:.2f}"
                    f"{' · stopped early' if result.stopped else ''}")
            return (result.image, (result.original, result.image), info, [str(p) for p in paths.values()],
                    _gallery(hist), hist, _bar(result, total[0]))

        yield from drive(self.edit_fn(record["latent"], record["prompt"], edit_prompt, **settings), flag,
                         on_progress, on_result)

    @staticmethod
    def _selected(records, selected) -> dict:
        if not records:
            raise gr.Error("Generate an image first (refine and edit work on the selected result)")
        index = int(selected or 0)
        if not 0 <= index < len(records):
            raise gr.Error(f"No result number {index + 1}; pick one in the results gallery")
        return records[index]

    # ---- PNG upload -------------------------------------------------------------------------------------
    def restore(self, path):
        """Values for the controls of `restore_keys(specs)`, then the info text."""
        keys = restore_keys(self.restore_specs)
        if not path:
            return (gr.skip(),) * len(keys) + ("",)
        try:
            meta = read_png_metadata(path)
            values, skipped = controls_from_metadata(meta, self.restore_specs)
        except (OSError, ValueError) as err:
            raise gr.Error(page_text(f"Could not restore settings: {err}")) from None
        if (GENERATE, "seed") in values:
            values[("ui", "random_seed")] = False
        info = f"Restored settings from the PNG (model: {meta.get('model', '?')})."
        if skipped:
            info += " Not restored: " + "; ".join(skipped)
        return tuple(values.get(key, gr.skip()) for key in keys) + (info,)


def build(generate: Callable[..., Iterator] | None = None, refine: Callable[..., Iterator] | None = None,
          edit: Callable[..., Iterator] | None = None, *, specs: dict[str, dict[str, Any]] | None = None,
          model: str = "(no model)", clip_model: str | None = None, one_step: bool = True,
          load_error: str | None = None, model_state: Callable[[], str] | None = None,
          img2img: Callable[..., Iterator] | None = None, inpaint: Callable[..., Iterator] | None = None,
          vectorize_target: dict[str, Any] | None = None) -> gr.Blocks | None:
    """Add the "Text to Image" tab to the current Blocks (or to a new `gr.Blocks`, which is then returned).

    `generate`, `refine`, `edit`: `Text2ImagePipeline.iter_generate / iter_refine / iter_edit` (or wrappers of them,
    e.g. `spaces.GPU`); `specs`: {task name: its `ParamSpec`s} for text2image (the model family's:
    `specs(Text2ImageConfig.for_model(model))`), text2image-refine and text2image-edit; `model`, `clip_model`:
    what the page names; `one_step`: the model makes an image in one step (refine applies; no scheduler choice);
    `load_error`: the message to show instead when the model could not be loaded (nothing fake is produced);
    `model_state()`: what the model and its CLIP will really run, shown before the first click; `img2img`,
    `inpaint`: the `text2image-img2img` / `text2image-inpaint` tasks' `iter_img2img` / `iter_inpaint` on the same
    model (their specs under those names), which add "Start from your picture" (absent without them).
    `vectorize_target`: where "Vectorize selected" sends a result (Vector Sketch's Picture → SVG: its `picture`
    upload and `seen` preview, and the `tabs` to select with their `ids`, outer first); no such button without it.
    """
    from gradio.context import Context

    if specs is None and load_error is None:
        raise ValueError("`specs` must give the settings of text2image, text2image-refine and text2image-edit")
    h = Handlers(generate, refine, edit, specs, load_error=load_error, img2img=img2img,
                 inpaint=inpaint) if specs is not None else None

    def layout() -> None:
        _layout(h, specs, model, clip_model, one_step, load_error, model_state, vectorize_target)

    if Context.block is None:
        with gr.Blocks(title="Text to Image") as demo:
            with gr.Tab("Text to Image", id="text2image"):
                layout()
        return demo
    with gr.Tab("Text to Image", id="text2image"):
        layout()
    return None


def _as_markdown(message: str) -> str:
    """A multi-line error ("Tried:" then "  - ..." items then prose) as Markdown: the prose after the list gets
    its own paragraph instead of continuing the last item."""
    out: list[str] = []
    for line in message.splitlines():
        if out and out[-1].lstrip().startswith("- ") and not line.lstrip().startswith("- "):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _layout(h: Handlers | None, specs: dict[str, dict[str, Any]] | None, model: str, clip_model: str | None,
            one_step: bool, load_error: str | None, model_state: Callable[[], str] | None = None,
            vectorize_target: dict[str, Any] | None = None) -> None:
    gr.Markdown(f"### Text to Image · `{model}`" + (f" · reranked by CLIP `{clip_model}`" if clip_model else ""))
    model_state_line(None, model_state)
    if load_error:  # no controls that could only fail: say what is missing and how to supply it
        gr.Markdown(f"**The text-to-image model is not available.**\n\n{_as_markdown(load_error)}\n\n"
                    "Set `STUDIO_T2I_MODEL` to a downloaded diffusers folder (or run once with network access so "
                    "the model is cached) and restart the studio.")
        return
    comps: dict[tuple[str, str], gr.components.Component] = {}

    def c(task: str, name: str, **kwargs: Any) -> gr.components.Component:
        comps[(task, name)] = control(task, specs[task][name], **kwargs)
        return comps[(task, name)]

    token = gr.State(None)  # the running task's token: the one Stop's input
    current = gr.State([])  # records of the latest results: path, caption, meta, latent, prompt
    history = gr.State([])
    selected = gr.State(0)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a watercolor fox in a snowy forest")
            comps[(GENERATE, "prompt")] = prompt
            # always shown: negative prompts with guidance <= 1 are refused by the pipeline, with its message, so the
            # box the message names must be in sight
            c(GENERATE, "negative_prompts", lines=2)
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary")
                stop_button(token, api_name="t2i_stop")
            with gr.Row():
                c(GENERATE, "num_images")
                c(GENERATE, "rerank")
            with gr.Row():
                seed = c(GENERATE, "seed")
                comps[("ui", "random_seed")] = gr.Checkbox(value=True, label="Random seed")
            with gr.Accordion("Advanced", open=False):
                c(GENERATE, "num_steps")
                c(GENERATE, "guidance_scale")
                with gr.Row():
                    c(GENERATE, "width")
                    c(GENERATE, "height")
                c(GENERATE, "batch_size")
                c(GENERATE, "scheduler", visible=not one_step)
                for name in h.names[GENERATE]:  # any setting without a place above
                    if (GENERATE, name) not in comps:
                        c(GENERATE, name)
            upload = gr.File(label="Restore settings from a PNG made here", file_types=[".png"], type="filepath")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Results (select one to refine or edit)", columns=4, format="png",
                                 height="auto")
            progress = gr.HTML()
            info = gr.Markdown()
            files = gr.File(label="Downloads (the PNGs carry their settings)", file_count="multiple",
                            interactive=False)
    with gr.Row():
        with gr.Accordion("CLIP refine (ReNO noise optimisation, one-step models)", open=False, visible=one_step):
            for name in h.names[REFINE]:
                c(REFINE, name)
            refine_btn = gr.Button("Refine selected")
        with gr.Accordion("CLIP edit (directional loss on the latent)", open=False):
            edit_prompt = gr.Textbox(label="Edit toward", placeholder="a watercolor wolf in a snowy forest")
            comps[(EDIT, "edit_prompt")] = edit_prompt
            for name in h.names[EDIT]:
                c(EDIT, name)
            edit_btn = gr.Button("Edit selected")
    vectorize_btn = gr.Button("Vectorize selected (→ Vector Sketch, Picture → SVG)",
                              size="sm") if vectorize_target else None
    with gr.Row():
        preview = gr.Image(label="Live preview", format="png", interactive=False, height=448)
        compare = gr.ImageSlider(label="Before / after", format="png", type="pil", interactive=False, height=448)
    picture_outputs = _picture_section(h, c, prompt, history) if h.img2img_fn or h.inpaint_fn else None
    history_gallery = gr.Gallery(label="Session history", columns=8, format="png", height="auto")

    def on_select(evt: gr.SelectData):
        return evt.index

    def controls_of(task: str) -> list:
        return [comps[(task, n)] for n in h.names[task]]

    gallery.select(on_select, None, selected)
    generate_btn.click(lambda: 0, None, selected).then(
        run_handler(h.generate), [prompt, comps[("ui", "random_seed")], history, *controls_of(GENERATE)],
        [token, gallery, files, info, seed, current, history_gallery, history, progress, preview],
        api_name="t2i_generate")
    run_outputs = [token, preview, compare, info, files, history_gallery, history, progress]
    refine_btn.click(run_handler(h.refine), [current, selected, history, *controls_of(REFINE)], run_outputs,
                     api_name="t2i_refine")
    edit_btn.click(run_handler(h.edit), [current, selected, edit_prompt, history, *controls_of(EDIT)], run_outputs,
                   api_name="t2i_edit")
    if picture_outputs is not None:  # img2img and inpaint show their results where generate does
        for button, task, handler, inputs in picture_outputs:
            button.click(lambda: 0, None, selected).then(
                run_handler(handler), [*inputs, *controls_of(task)],
                [token, gallery, files, info, comps[(task, "seed")], current, history_gallery, history, progress,
                 preview], api_name=f"t2i_{task.removeprefix('text2image-')}")
    if vectorize_btn is not None:
        target = vectorize_target
        vectorize_btn.click(user_errors(lambda records, index: send_to_vectorize(records, index, target["ids"])),
                            [current, selected],
                            [target["picture"], target["seen"], *target["tabs"]], api_name="t2i_vectorize")
    upload.upload(user_errors(h.restore), upload, [comps[key] for key in restore_keys(h.restore_specs)] + [info],
                  api_name="t2i_restore")


def send_to_vectorize(records: list[dict], selected: Any, ids: Sequence[str]) -> tuple:
    """"Vectorize selected": the selected result's PNG into Vector Sketch's Picture → SVG upload and its preview,
    and the tabs of `ids` selected (Vector Sketch, then its sub-tab); the Vectorize click there makes the SVG."""
    if not records:
        raise ValueError("Generate an image first: Vectorize takes the selected result")
    index = int(selected or 0)
    if not 0 <= index < len(records):
        raise ValueError(f"No result number {index + 1}; pick one in the results gallery")
    path = records[index]["path"]
    return (path, gr.update(value=path, visible=True), *(gr.Tabs(selected=i) for i in ids))


def _picture_section(h: Handlers, c: Callable[..., gr.components.Component], prompt: gr.Textbox,
                     history: gr.State) -> list[tuple[gr.Button, str, Callable, list]]:
    """"Start from your picture": the image editor (upload, then paint the area to repaint with the brush), an
    optional mask upload, and the img2img and inpaint/outpaint controls. Returns (button, task, handler, its inputs
    before the controls) for each task offered; the caller wires them to the shared outputs."""
    wired = []
    with gr.Accordion("Start from your picture: img2img, inpaint, outpaint", open=False):
        with gr.Row():
            with gr.Column(scale=3):
                picture = gr.ImageEditor(
                    label="Your picture (paint the area to repaint with the brush)", type="filepath",
                    sources=("upload", "clipboard"), transforms=(), layers=False, format="png",
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24), height=448)
            with gr.Column(scale=2):
                if h.inpaint_fn is not None:
                    mask_upload = image_upload("Or upload a mask (white = repaint; the picture's size)", "mask")
                if h.img2img_fn is not None:
                    with gr.Accordion("img2img: redraw the whole picture", open=True):
                        for name in h.names[IMG2IMG]:
                            c(IMG2IMG, name)
                        img2img_btn = gr.Button("img2img", variant="primary")
                    wired.append((img2img_btn, IMG2IMG, h.img2img, [picture, prompt, history]))
                if h.inpaint_fn is not None:
                    with gr.Accordion("Inpaint / outpaint: redraw the painted area, or extend the canvas", open=True):
                        for name in h.names[INPAINT]:
                            c(INPAINT, name)
                        inpaint_btn = gr.Button("Inpaint / outpaint", variant="primary")
                    wired.append((inpaint_btn, INPAINT, h.inpaint, [picture, mask_upload, prompt, history]))
    return wired
