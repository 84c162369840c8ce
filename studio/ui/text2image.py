"""Text to Image tab: generate with diffusers, rerank by CLIP, refine (ReNO) and edit (directional CLIP).

`build(...)` receives plain callables and never imports torch; `app.py` joins them to a `Text2ImagePipeline`:

    build(generate=t2i.iter_generate, refine=t2i.iter_refine, edit=t2i.iter_edit, defaults=t2i.defaults())

Each callable returns an iterator of items with a `done` flag: progress items (`step`, `total`, `preview`, `score`)
and, last, the result. Generation's progress items also place the step within its batch (`batch_step`,
`batch_steps`, `first_image`, `last_image`, `num_images`; see `GenerationProgress`). Gradio's Stop button cancels the
event, which closes the iterator at its next step (for a multi-step model, the next denoising step).
"""

from __future__ import annotations

import random
from contextlib import closing
from typing import Any, Callable, Iterator

import gradio as gr

from studio.media import read_png_metadata
from studio.ui.common import user_errors

# Controls an uploaded PNG can restore: metadata key -> type.
RESTORABLE: dict[str, type] = {
    "prompt": str, "negative_prompt": str, "seed": int, "steps": int, "guidance_scale": float, "width": int,
    "height": int, "scheduler": str,
}
MAX_HISTORY = 64  # images kept in the session history gallery

FALLBACK_DEFAULTS: dict[str, Any] = {
    "model": "(no model)", "steps": 1, "guidance_scale": 0.0, "width": 512, "height": 512, "one_step": True,
    "schedulers": ["default"], "max_side": 1024, "max_batch": 8, "max_images": 64, "max_steps": 100,
    "max_guidance": 30.0, "clip_model": None,
}


def controls_from_metadata(meta: dict | None) -> dict[str, Any]:
    """The generation controls stored in a PNG's metadata (see `Text2ImageOutput.metadata`), type-checked."""
    if not meta or meta.get("tool") not in ("text2image", "text2image-edit"):
        raise ValueError("this PNG carries no Text to Image settings (only PNGs saved by this tab do)")
    controls = {}
    for key, kind in RESTORABLE.items():
        if key in meta and meta[key] is not None:
            try:
                controls[key] = kind(meta[key])
            except (TypeError, ValueError):
                raise ValueError(f"PNG metadata `{key}` is not a {kind.__name__}: {meta[key]!r}") from None
    if "prompt" not in controls:
        raise ValueError("this PNG's Text to Image settings lack a prompt")
    return controls


def generation_status(item: Any) -> str:
    """Progress text for a generation step: "step 7/25 of images 1–4/8", or "2/8 images" for one-step models,
    which report once per finished batch."""
    if item.batch_steps == 1:
        return f"Generating… {item.last_image}/{item.num_images} images"
    images = (f"image {item.first_image}" if item.first_image == item.last_image
              else f"images {item.first_image}–{item.last_image}")
    return f"Generating… step {item.batch_step}/{item.batch_steps} of {images}/{item.num_images}"


def _caption(meta: dict) -> str:
    score = meta.get("clip_score")
    return f"seed {meta.get('seed')}" + (f" · CLIP {score:.2f}" if isinstance(score, (int, float)) else "")


class Handlers:
    """The tab's event handlers as plain generator functions (testable without a browser)."""

    def __init__(self, generate: Callable[..., Iterator] | None, refine: Callable[..., Iterator] | None,
                 edit: Callable[..., Iterator] | None, defaults: dict[str, Any], load_error: str | None = None):
        self.generate_fn, self.refine_fn, self.edit_fn = generate, refine, edit
        self.defaults = defaults
        self.load_error = load_error

    def _check_loaded(self, fn: Callable | None, what: str) -> None:
        if self.load_error:
            raise gr.Error(self.load_error, title="Model not available")
        if fn is None:
            raise gr.Error(f"{what} is not available for this model", title="Not available")

    # ---- generate ---------------------------------------------------------------------------------------
    @user_errors
    def generate(self, prompt, negative_prompt, steps, guidance_scale, width, height, num_images, batch_size,
                 seed, random_seed, scheduler, rerank, history):
        """Yields (gallery, files, info, seed, current records, history gallery, history records)."""
        self._check_loaded(self.generate_fn, "Generation")
        seed = random.randrange(2**32 - 1024) if random_seed or seed is None else int(seed)
        kwargs = dict(
            negative_prompt=negative_prompt if negative_prompt and float(guidance_scale) > 1 else None,
            steps=int(steps), guidance_scale=float(guidance_scale), width=int(width), height=int(height),
            num_images=int(num_images), batch_size=int(batch_size), seed=seed, scheduler=scheduler,
            rerank=bool(rerank),
        )
        history = list(history or [])
        # closing(): when Stop closes this handler, the pipeline's generator is closed at once, not when collected,
        # so that a diffusers call running in its worker thread ends at its next step.
        with closing(self.generate_fn(prompt, **kwargs)) as items:
            for item in items:
                if not item.done:
                    yield gr.skip(), gr.skip(), generation_status(item), seed, gr.skip(), gr.skip(), gr.skip()
                    continue
                yield self._generated(item, seed, history)

    @staticmethod
    def _generated(item: Any, seed: int, history: list[dict]) -> tuple:
        if not item.images:
            return (gr.skip(), gr.skip(), "Stopped before the first image was finished", seed, gr.skip(),
                    gr.skip(), gr.skip())
        records = []
        for i in range(len(item.images)):
            meta = item.metadata(i)
            path = str(item.save(i))
            records.append({"path": path, "caption": _caption(meta), "meta": meta, "latent": item.latents[i],
                            "prompt": item.prompt})
        history = (records + history)[:MAX_HISTORY]
        info = f"{len(records)} image(s) · seeds {item.seeds[0]}…{item.seeds[-1]}"
        if item.scores is not None:
            info += " · sorted by CLIP score" if item.reranked else " · CLIP scores in captions"
        if item.stopped:
            info += " · stopped early"
        return ([(r["path"], r["caption"]) for r in records], [r["path"] for r in records], info, seed, records,
                [(r["path"], r["caption"]) for r in history], history)

    # ---- refine -----------------------------------------------------------------------------------------
    @user_errors
    def refine(self, records, selected, steps, reg_weight, history):
        """Yields (preview, before/after, info, history gallery, history records)."""
        self._check_loaded(self.refine_fn, "Refine")
        record = self._selected(records, selected)
        meta = record["meta"]
        iterator = self.refine_fn(meta["prompt"], seed=int(meta["seed"]), width=int(meta["width"]),
                                  height=int(meta["height"]), steps=int(steps), reg_weight=float(reg_weight))
        history = list(history or [])
        for item in iterator:
            if not item.done:
                yield (item.preview, gr.skip(), f"Refining… step {item.step}/{item.total} · CLIP {item.score:.2f}",
                       gr.skip(), gr.skip())
                continue
            path = str(item.save())
            meta = item.metadata()
            history = ([{"path": path, "caption": f"refined · CLIP {item.score_after:.2f}", "meta": meta,
                         "latent": item.latents[0], "prompt": item.prompt}] + history)[:MAX_HISTORY]
            info = (f"CLIP score {item.score_before:.2f} → {item.score_after:.2f} (best at step {item.best_step}"
                    f"{', stopped early' if item.stopped else ''})")
            yield (item.image, (item.start_image, item.image), info, [(r["path"], r["caption"]) for r in history],
                   history)

    # ---- edit -------------------------------------------------------------------------------------------
    @user_errors
    def edit(self, records, selected, edit_prompt, strength, steps, history):
        """Yields (preview, before/after, info, history gallery, history records)."""
        self._check_loaded(self.edit_fn, "Edit")
        record = self._selected(records, selected)
        iterator = self.edit_fn(record["latent"], record["prompt"], edit_prompt, strength=float(strength),
                                steps=int(steps))
        history = list(history or [])
        for item in iterator:
            if not item.done:
                yield (item.preview, gr.skip(),
                       f"Editing… step {item.step}/{item.total} · direction {item.score:.3f}", gr.skip(), gr.skip())
                continue
            path = str(item.save())
            history = ([{"path": path, "caption": f"edit: {item.edit_prompt}", "meta": item.metadata(),
                         "latent": item.latents[0], "prompt": item.edit_prompt}] + history)[:MAX_HISTORY]
            info = (f"Directional CLIP {item.directional[-1]:.3f} · CLIP score for “{item.edit_prompt}” "
                    f"{item.edit_score_before:.2f} → {item.edit_score_after:.2f}"
                    f"{' · stopped early' if item.stopped else ''}")
            yield (item.image, (item.original, item.image), info, [(r["path"], r["caption"]) for r in history],
                   history)

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
        """Values for (prompt, negative, seed, random seed, steps, guidance, width, height, scheduler, info)."""
        if not path:
            return (gr.skip(),) * 9 + ("",)
        try:
            meta = read_png_metadata(path)
            controls = controls_from_metadata(meta)
        except (OSError, ValueError) as err:
            raise gr.Error(f"Could not restore settings: {err}") from None
        get = controls.get
        upd = lambda key: controls[key] if key in controls else gr.skip()  # noqa: E731
        return (upd("prompt"), get("negative_prompt", ""), upd("seed"), False if "seed" in controls else gr.skip(),
                upd("steps"), upd("guidance_scale"), upd("width"), upd("height"),
                upd("scheduler") if get("scheduler") in self.defaults["schedulers"] else gr.skip(),
                f"Restored settings from the PNG (model: {meta.get('model', '?')}).")


def build(generate: Callable[..., Iterator] | None = None, refine: Callable[..., Iterator] | None = None,
          edit: Callable[..., Iterator] | None = None, *, defaults: dict[str, Any] | None = None,
          load_error: str | None = None) -> gr.Blocks | None:
    """Add the "Text to Image" tab to the current Blocks (or to a new `gr.Blocks`, which is then returned).

    `generate`, `refine`, `edit`: `Text2ImagePipeline.iter_generate / iter_refine / iter_edit` (or wrappers of them,
    e.g. `spaces.GPU`); `defaults`: `Text2ImagePipeline.defaults()`; `load_error`: the message to show instead
    when the model could not be loaded (the buttons then report it; nothing fake is produced).
    """
    from gradio.context import Context

    d = {**FALLBACK_DEFAULTS, **(defaults or {})}
    h = Handlers(generate, refine, edit, d, load_error)
    if Context.block is None:
        with gr.Blocks(title="Text to Image") as demo:
            with gr.Tab("Text to Image", id="text2image"):
                _layout(h, d, load_error)
        return demo
    with gr.Tab("Text to Image", id="text2image"):
        _layout(h, d, load_error)
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


def _layout(h: Handlers, d: dict[str, Any], load_error: str | None) -> None:
    gr.Markdown(f"### Text to Image · `{d['model']}`" + (f" · reranked by CLIP `{d['clip_model']}`"
                                                           if d.get("clip_model") else ""))
    if load_error:  # no controls that could only fail: say what is missing and how to supply it
        gr.Markdown(f"**The text-to-image model is not available.**\n\n{_as_markdown(load_error)}\n\n"
                    "Set `STUDIO_T2I_MODEL` to a downloaded diffusers folder (or run once with network access so "
                    "the model is cached) and restart the studio.")
        return
    current = gr.State([])  # records of the latest results: path, caption, meta, latent, prompt
    history = gr.State([])
    selected = gr.State(0)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a watercolor fox in a snowy forest")
            negative = gr.Textbox(label="Negative prompt", visible=d["guidance_scale"] > 1)
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary")
                stop_btn = gr.Button("Stop", variant="stop")
            with gr.Row():
                num_images = gr.Slider(1, d["max_images"], value=4, step=1, label="Images (candidates)")
                rerank = gr.Checkbox(value=d.get("clip_model") is not None, label="Sort by CLIP score",
                                     interactive=d.get("clip_model") is not None)
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image i uses seed + i)")
                random_seed = gr.Checkbox(value=True, label="Random seed")
            with gr.Accordion("Advanced", open=False):
                steps = gr.Slider(1, d["max_steps"], value=d["steps"], step=1, label="Steps")
                guidance = gr.Slider(0.0, d["max_guidance"], value=d["guidance_scale"], step=0.5,
                                     label="Guidance scale (negative prompt needs > 1)")
                with gr.Row():
                    width = gr.Slider(16, d["max_side"], value=d["width"], step=8, label="Width")
                    height = gr.Slider(16, d["max_side"], value=d["height"], step=8, label="Height")
                batch_size = gr.Slider(1, d["max_batch"], value=min(4, d["max_batch"]), step=1,
                                       label="Batch size (images per forward pass)")
                scheduler = gr.Dropdown(d["schedulers"], value="default", label="Scheduler (multi-step models)",
                                        visible=not d["one_step"])
            upload = gr.File(label="Restore settings from a PNG made here", file_types=[".png"], type="filepath")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Results (select one to refine or edit)", columns=4, format="png",
                                 height="auto")
            info = gr.Markdown()
            files = gr.File(label="Download PNGs (settings inside)", file_count="multiple", interactive=False)
    with gr.Row():
        with gr.Accordion("CLIP refine (ReNO noise optimisation, one-step models)", open=False,
                          visible=bool(d["one_step"])):
            refine_steps = gr.Slider(1, 50, value=20, step=1, label="Refine steps")
            reg_weight = gr.Slider(0.0, 0.1, value=0.01, step=0.005, label="Noise-norm regulariser weight")
            refine_btn = gr.Button("Refine selected")
        with gr.Accordion("CLIP edit (directional loss on the latent)", open=False):
            edit_prompt = gr.Textbox(label="Edit toward", placeholder="a watercolor wolf in a snowy forest")
            strength = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Strength (1 = no pull to the original)")
            edit_steps = gr.Slider(1, 50, value=20, step=1, label="Edit steps")
            edit_btn = gr.Button("Edit selected")
    with gr.Row():
        preview = gr.Image(label="Live preview", format="png", interactive=False, height=448)
        compare = gr.ImageSlider(label="Before / after", format="png", type="pil", interactive=False, height=448)
    history_gallery = gr.Gallery(label="Session history", columns=8, format="png", height="auto")

    def on_select(evt: gr.SelectData):
        return evt.index

    gallery.select(on_select, None, selected)
    guidance.change(lambda g: gr.update(visible=g > 1), guidance, negative)
    gen_inputs = [prompt, negative, steps, guidance, width, height, num_images, batch_size, seed, random_seed,
                  scheduler, rerank, history]
    gen_event = generate_btn.click(lambda: 0, None, selected).then(
        h.generate, gen_inputs, [gallery, files, info, seed, current, history_gallery, history],
        api_name="t2i_generate")
    refine_event = refine_btn.click(h.refine, [current, selected, refine_steps, reg_weight, history],
                                    [preview, compare, info, history_gallery, history], api_name="t2i_refine")
    edit_event = edit_btn.click(h.edit, [current, selected, edit_prompt, strength, edit_steps, history],
                                [preview, compare, info, history_gallery, history], api_name="t2i_edit")
    stop_btn.click(None, None, None, cancels=[gen_event, refine_event, edit_event])
    upload.upload(h.restore, upload, [prompt, negative, seed, random_seed, steps, guidance, width, height, scheduler,
                                      info], api_name="t2i_restore")
