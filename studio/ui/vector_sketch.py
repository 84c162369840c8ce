"""Vector Sketch tab: text → SVG drawing (CLIPDraw), photo → line sketch (CLIPasso) and picture → SVG (Vectorize),
with live previews.

`build` receives plain functions and the tasks' setting specs (see studio/app.py) and never touches a model or
imports torch. Each run function returns a task generator on the run protocol (`studio.progress`): progress items
(`.step`, `.total`, `.preview` PIL or None, `.metrics`), then the result (`.image`, `.scores`, `.notice`,
`.steps_run`, `.stopped`, `.save(video=...)` → {"svg", "png", "video"} paths). Stop is the studio's one Stop
(`studio.ui.common.RUNS`): the run ends with its best result so far, shown with its downloads.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import gradio as gr

from studio.ui.common import (
    control,
    drive,
    image_upload,
    model_state_line,
    notice_markdown,
    page_text,
    progress_html,
    run_handler,
    stop_button,
    user_errors,
)

SAME_MODEL = "(same as CLIP model)"
CUSTOM = "custom"
EXAMPLE_PROMPTS = ["a red circle", "a blue star on the left", "a watercolor painting of an underwater submarine"]
UPDATE_EVERY_S = 0.25  # steps without a preview update the bar at most this often (fast GPU steps)
DRAW_SETTINGS = ("num_strokes", "num_steps", "canvas_size", "max_stroke_width", "filled", "seed")
SKETCH_SETTINGS = ("num_strokes", "num_steps", "num_seeds", "stroke_width", "mask_background", "seed")
VECTORIZE_SETTINGS = ("num_paths", "mode", "paint", "num_steps", "target_psnr", "canvas_size", "clip_weight",
                      "clip_prompt", "seed")


def park_at_end(elem_id: str) -> str:
    """Browser code that shows the video of `#elem_id` at its last frame (the result) once it has loaded, instead of
    its first (the random start strokes, which read as a result); play starts it from the beginning. Gradio 6's
    `playback_position` is not applied to a new value, hence this."""
    return ("() => { for (const v of document.querySelectorAll('#" + elem_id + " video')) {"
            " const park = () => { if (isFinite(v.duration)) v.currentTime = v.duration; };"
            " if (v.readyState >= 1) park(); else v.addEventListener('loadedmetadata', park, {once: true}); } }")


def stream(run: Iterator, flag: threading.Event, video: str = "mp4") -> Iterator[tuple]:
    """Drive a run generator: yield (preview, progress html, svg, png, video, score text) tuples for the page.

    Between steps the Stop `flag` is read; once set, "stop" is sent and the run returns its best so far, which is
    shown with its files like a finished run."""
    last = [0.0]

    def on_progress(item) -> tuple:
        now = time.monotonic()
        if item.preview is None and now - last[0] < UPDATE_EVERY_S and item.step < item.total:
            return (gr.skip(),) * 6
        last[0] = now
        loss, psnr = item.metrics.get("loss"), item.metrics.get("psnr")
        text = f"loss {loss:.4f}" if loss is not None else ""
        if psnr is not None:  # Vectorize: the paths so far and the error
            text = f"{int(item.metrics.get('paths', 0))} paths · PSNR {psnr:.2f} dB"
        preview = item.preview if item.preview is not None else gr.skip()
        return preview, progress_html(item.step, item.total, text, clock=item.clock), None, None, None, ""

    def on_result(item) -> tuple:
        paths = item.save(video=video)
        scores = item.scores
        if "psnr" in scores:  # Vectorize: the SVG's paths and its error against the picture
            lines = [f"**{int(scores['num_paths'])} paths · PSNR {scores['psnr']:.2f} dB**"]
            if "clip_score" in scores:
                lines.append(f"· CLIP score {scores['clip_score']:.1f}")
        else:
            lines = [f"**CLIP score {scores['clip_score']:.1f}**"]
        if "clip_score_init" in scores:
            lines.append(f"(start {scores['clip_score_init']:.1f})")
        if "loss" in scores and "psnr" not in scores:
            lines.append(f"· loss {scores['loss']:.4f}")
        if getattr(item, "seeds", None):
            lines.append(f"· kept seed {item.seed} of {', '.join(str(s) for s in item.seeds)}")
        total = item.settings.get("num_steps", item.steps_run)
        state = "stopped" if item.stopped else "done"
        if getattr(item, "early_stopped", False):
            lines.append(f"· loss stalled, stopped early at step {item.steps_run}")
        notice = notice_markdown(getattr(item, "notice", None))
        text = " ".join(lines) + (f"\n\n{notice}" if notice else "")
        return (item.image, progress_html(item.steps_run, total, state=state), str(paths["svg"]), str(paths["png"]),
                str(paths.get("video", "")) or None, text)

    yield from drive(run, flag, on_progress, on_result)


def palette_choice(mode: str | None, palette: str | None) -> str | None:
    """The `colors` setting from the Colours dropdown and the custom palette box: the palette when the mode is
    "custom"; a palette typed beside a named mode is refused with the reason, never dropped in silence (an API
    client can send both; on the page, typing a palette selects "custom")."""
    palette = (palette or "").strip()
    if mode == CUSTOM:
        if not palette:
            raise ValueError("`colors` is 'custom' but the palette is empty: type colours like #ff0000, #0000ff")
        return palette
    if palette:
        raise ValueError(f"a custom palette ({palette[:60]!r}) is typed but `colors` is {mode!r}: choose 'custom' to "
                         "draw with the palette, or clear it")
    return mode


def read_svg_upload(svg_file: Any) -> str | None:
    """The text of an uploaded SVG (a path from the page), or None."""
    if not svg_file:
        return None
    path = svg_file if isinstance(svg_file, str) else getattr(svg_file, "name", svg_file)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"`init_svg` could not be read as SVG text ({type(err).__name__})") from None


SKETCH_TAB = "sketch"  # the Vector Sketch tab's id
VECTORIZE_TAB = "vectorize"  # its Picture → SVG sub-tab's id


def build(clipdraw: Callable[..., Iterator], clipasso: Callable[..., Iterator], model_choices: list[str],
          default_model: str, model_status: Callable[[str], str | None], *, draw_specs: dict[str, Any],
          sketch_specs: dict[str, Any], colour_modes: list[str], loss_model_choices: list[str] | None = None,
          default_loss_model: str | None = None, cpu: bool = False,
          model_state: Callable[[str], str] | None = None, check_svg: Callable[[str], Any] | None = None,
          vectorize: Callable[..., Iterator] | None = None, vectorize_specs: dict[str, Any] | None = None,
          custom_models: bool = True) -> dict[str, Any] | None:
    """Add the Vector Sketch tab's components to the current Blocks; returns what another tab may fill (the
    Picture → SVG sub-tab's `picture` upload, its `seen` preview and the sub-`tabs` with that sub-tab's id
    `VECTORIZE_TAB`), or None without that sub-tab. `custom_models`: the model dropdowns take typed
    values (a local server; a public one offers its list only).

    clipdraw(spec, prompt, init_svg, settings) -> a CLIPDraw run generator (settings: `CLIPDrawConfig` fields).
    clipasso(spec, loss_spec or None, image, settings) -> a CLIPasso run generator; loss_spec is the CLIP whose
        ResNet activations drive the geometric loss (None: the same model as spec).
    draw_specs / sketch_specs: the tasks' setting specs (`studio.tasks.Task.specs()`), from which every control
        takes its default and range. colour_modes: CLIPDraw's named colour modes (a custom palette is added).
    model_status(spec) -> a message when using that model needs loading first, else None.
    model_state(spec) -> what that model will really run (shown under the dropdown before the first click).
    vectorize(spec, image, settings) -> a Vectorize run generator (settings: `VectorizeConfig` fields; the CLIP
        model is used only when clip_weight > 0), with `vectorize_specs` its settings' specs; None: no such sub-tab.
    cpu: start the controls at their CPU values (the papers' settings take a GPU).
    check_svg(text): raises ValueError when an uploaded start SVG cannot be used; it is asked at upload, as
        uploaded images are read at upload, so a bad file is refused before the Draw click.
    """
    loss_choices = [SAME_MODEL] + list(loss_model_choices or [])
    paper = (f"CLIPDraw {draw_specs['num_strokes'].default} strokes × {draw_specs['num_steps'].default} steps; "
             f"CLIPasso {sketch_specs['num_steps'].default} steps × {sketch_specs['num_seeds'].default} seeds")
    with gr.Tab("Vector Sketch", id=SKETCH_TAB):
        gr.Markdown("Draw with Bézier strokes that CLIP steers: type a prompt (**CLIPDraw**) or upload a photo "
                    "(**CLIPasso**); or turn any picture into an editable SVG (**Vectorize**). Previews stream "
                    "while it works; **Stop** keeps the best result so far."
                    + (f" Running on a CPU, the controls start smaller than the papers' settings ({paper}), which "
                       "take a GPU." if cpu else ""))
        model = gr.Dropdown(model_choices, value=default_model, label="CLIP model",
                            allow_custom_value=custom_models)
        model_state_line(model, model_state)

        def announce(spec):
            msg = model_status(spec)
            if msg:
                gr.Info(page_text(msg))

        def outputs_column(name: str):
            preview = gr.Image(label="Live preview", type="pil", interactive=False, height=360)
            progress = gr.HTML()
            score = gr.Markdown()
            with gr.Row():
                svg = gr.File(label="SVG")
                png = gr.File(label="PNG")
            # no autoplay, and parked on its last frame (`park_at_end`): the first frame read as a result
            video = gr.Video(label="Optimisation (shown at its end; press play to watch it)", interactive=False,
                             elem_id=f"{name}-video")
            return preview, progress, svg, png, video, score

        with gr.Tabs() as sub_tabs:
            with gr.Tab("Text → drawing (CLIPDraw)"):
                draw_token = gr.State(None)
                with gr.Row():
                    with gr.Column():
                        prompt = gr.Textbox(EXAMPLE_PROMPTS[0], label="Prompt", lines=2)
                        with gr.Row():
                            draw_btn = gr.Button("Draw", variant="primary")
                            stop_button(draw_token, api_name="sketch_clipdraw_stop")
                        with gr.Accordion("Negative prompts (optional)", open=False):
                            weight = draw_specs['negative_weight'].default
                            negatives = gr.Textbox("", label=f"Negative prompts (one per line, weight {weight:g} each)",
                                                   lines=2,
                                                   placeholder="A badly drawn sketch.\nMany ugly, messy drawings.")
                        draw = {n: control("clipdraw", draw_specs[n], cpu=cpu) for n in DRAW_SETTINGS}
                        with gr.Row():
                            colours = gr.Dropdown(list(colour_modes) + [CUSTOM], value=draw_specs["colors"].default,
                                                  label="Colours")
                            custom = gr.Textbox("", label="Custom palette", placeholder="#d62828, #1d4ed8, #111111")
                        with gr.Accordion("Start from an SVG (optional)", open=False):
                            svg_in = gr.File(label="SVG file", file_types=[".svg"])
                            if check_svg is not None:
                                svg_in.upload(user_errors(lambda f: check_svg(read_svg_upload(f))), svg_in, None,
                                              api_visibility="private", show_progress="hidden")
                    with gr.Column():
                        draw_out = outputs_column("clipdraw")

                # Typing a palette selects "custom"; picking a named mode clears the palette: the two never disagree on
                # the page (issue 29: a typed palette was ignored unless the dropdown said custom).
                custom.change(lambda text: gr.update(value=CUSTOM) if (text or "").strip() else gr.skip(), custom,
                             colours, queue=False, api_visibility="private")
                colours.input(lambda mode: "" if mode != CUSTOM else gr.skip(), colours, custom, queue=False,
                              api_visibility="private")

                def on_draw(spec, p, neg, col, cust, svg_file, *values, flag):
                    col = palette_choice(col, cust)
                    announce(spec)
                    settings = dict(zip(DRAW_SETTINGS, values))
                    settings.update(colors=col, negative_prompts=[s for s in (neg or "").splitlines() if s.strip()])
                    yield from stream(clipdraw(spec, p, read_svg_upload(svg_file), settings), flag)

                draw_btn.click(run_handler(on_draw), [model, prompt, negatives, colours, custom, svg_in,
                                                      *draw.values()],
                               [draw_token, *draw_out], api_name="sketch_clipdraw").then(
                    None, js=park_at_end("clipdraw-video"))

            with gr.Tab("Photo → sketch (CLIPasso)"):
                sketch_token = gr.State(None)
                with gr.Row():
                    with gr.Column():
                        # a file path, so that our own reader (and its messages) decodes the upload, not Gradio's
                        photo = image_upload("Photo")
                        with gr.Row():
                            sketch_btn = gr.Button("Sketch", variant="primary")
                            stop_button(sketch_token, api_name="sketch_clipasso_stop")
                        sketch = {n: control("clipasso", sketch_specs[n], cpu=cpu) for n in SKETCH_SETTINGS}
                        with gr.Accordion("Loss CLIP (optional)", open=False):
                            loss_model = gr.Dropdown(loss_choices, value=default_loss_model or SAME_MODEL,
                                                     label="Loss CLIP (a ResNet, e.g. RN101, as in the paper)",
                                                     allow_custom_value=custom_models)
                    with gr.Column():
                        sketch_out = outputs_column("clipasso")

                def on_sketch(spec, loss_spec, img, *values, flag):
                    if img is None:
                        raise ValueError("`image` is missing: upload a photo to sketch")
                    announce(spec)
                    loss = None if loss_spec in (None, "", SAME_MODEL) else loss_spec
                    if loss:
                        announce(loss)
                    yield from stream(clipasso(spec, loss, img, dict(zip(SKETCH_SETTINGS, values))), flag)

                sketch_btn.click(run_handler(on_sketch), [model, loss_model, photo, *sketch.values()],
                                 [sketch_token, *sketch_out], api_name="sketch_clipasso").then(
                    None, js=park_at_end("clipasso-video"))

            if vectorize is not None:
                picture = vector_tab(vectorize, vectorize_specs, model, announce, outputs_column, cpu)
    if vectorize is None:
        return None
    return {"picture": picture, "seen": picture.studio_seen, "tabs": sub_tabs}


def vector_tab(vectorize: Callable[..., Iterator], specs: dict[str, Any], model, announce: Callable,
               outputs_column: Callable, cpu: bool) -> gr.File:
    """The "Picture → SVG" sub-tab: a picture in, filled shapes or strokes out, drawn as paths are added. Returns
    the picture's upload box."""
    with gr.Tab("Picture → SVG (Vectorize)", id=VECTORIZE_TAB):
        token = gr.State(None)
        with gr.Row():
            with gr.Column():
                picture = image_upload("Picture")
                with gr.Row():
                    btn = gr.Button("Vectorize", variant="primary")
                    stop_button(token, api_name="sketch_vectorize_stop")
                values = {n: control("vectorize", specs[n], cpu=cpu) for n in VECTORIZE_SETTINGS}
                gr.Markdown("Paths are added where the drawing is still most wrong, a layer at a time (LIVE); the "
                            "preview shows the path count and the PSNR against the picture. No model is needed "
                            "unless the CLIP weight is above 0.")
            with gr.Column():
                out = outputs_column("vectorize")

        def on_vectorize(spec, img, *vals, flag):
            if img is None:
                raise ValueError("`image` is missing: upload a picture to vectorize")
            settings = dict(zip(VECTORIZE_SETTINGS, vals))
            if settings.get("clip_weight"):
                announce(spec)
            yield from stream(vectorize(spec, img, settings), flag)

        btn.click(run_handler(on_vectorize), [model, picture, *values.values()], [token, *out],
                  api_name="sketch_vectorize").then(None, js=park_at_end("vectorize-video"))
    return picture
