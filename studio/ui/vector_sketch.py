"""Vector Sketch tab: text → SVG drawing (CLIPDraw) and photo → line sketch (CLIPasso), with live previews.

`build` receives plain functions (see app.py) and never touches a model or imports torch. Each run function is a
generator in the shape of the pipelines' `iterate(...)`: it yields progress items (`.done` False, `.step`,
`.total`, `.preview` a PIL image, `.loss`) and finally the result (`.done` True, `.image`, `.scores`, `.notice`,
`.steps_run`, `.stopped`, `.save(video=...)` → {"svg", "png", "video"} paths). Sending it "stop" ends the run
with the best result so far — that is what the Stop button does, through a per-session flag the running handler
reads between steps.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable, Iterator

import gradio as gr

from studio.ui.common import notice_markdown, user_errors

COLOUR_CHOICES = ["full", "black", "primary", "pastel", "earth", "mono", "custom"]
SAME_MODEL = "(same as CLIP model)"
EXAMPLE_PROMPTS = ["a red circle", "a blue star on the left", "a watercolor painting of an underwater submarine"]

_stops: dict[str, threading.Event] = {}  # session → Stop flag of its running job
_stops_lock = threading.Lock()


def stop_flag(session: str) -> threading.Event:
    """The Stop flag of one browser session (created on first use)."""
    with _stops_lock:
        return _stops.setdefault(session, threading.Event())


def progress_html(step: int, total: int, text: str = "") -> str:
    pct = 100.0 * step / max(1, total)
    return (f'<div style="width:100%"><progress value="{step}" max="{total}" style="width:100%"></progress>'
            f"<div>step {step} / {total} ({pct:.0f} %) {html.escape(text)}</div></div>")


def stream(run: Iterator, stop: threading.Event, video: str = "mp4") -> Iterator[tuple]:
    """Drive a run generator: yield (preview, progress html, svg, png, video, score text) tuples for the page.

    Between steps the `stop` flag is checked; when set, "stop" is sent and the run returns its best so far.
    Closing this generator (Gradio cancelling the event) closes the run too.
    """
    try:
        item = next(run)
        while not getattr(item, "done", False):
            loss = f"· loss {item.loss:.4f}" if getattr(item, "loss", None) is not None else ""
            yield item.preview, progress_html(item.step, item.total, loss), None, None, None, ""
            item = run.send("stop" if stop.is_set() else None)
    finally:
        run.close()
    paths = item.save(video=video)
    scores = item.scores
    lines = [f"**CLIP score {scores['clip_score']:.1f}**"]
    if "clip_score_init" in scores:
        lines.append(f"(start {scores['clip_score_init']:.1f})")
    if "loss" in scores:
        lines.append(f"· loss {scores['loss']:.4f}")
    if getattr(item, "seeds", None):
        lines.append(f"· kept seed {item.seed} of {', '.join(str(s) for s in item.seeds)}")
    if item.stopped:
        lines.append(f"· stopped at step {item.steps_run}")
    elif getattr(item, "early_stopped", False):
        lines.append(f"· loss stalled, stopped early at step {item.steps_run}")
    notice = notice_markdown(getattr(item, "notice", None))
    text = " ".join(lines) + (f"\n\n{notice}" if notice else "")
    total = getattr(item, "steps_run", 0)
    yield (item.image, progress_html(total, total, "done"), str(paths["svg"]), str(paths["png"]), str(paths["video"]),
           text)


def clipdraw_options(prompt: str, negatives: str, num_paths: float, steps: float, canvas: float, max_width: float,
                     colours: str, custom: str, filled: bool, svg_file: Any, seed: float) -> dict:
    """The page's values as `CLIPDrawPipeline.iterate` keyword arguments (the pipeline checks them)."""
    svg = None
    if svg_file:
        path = svg_file if isinstance(svg_file, str) else getattr(svg_file, "name", svg_file)
        try:
            with open(path, encoding="utf-8") as f:
                svg = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"`init_svg` could not be read as SVG text ({type(err).__name__})") from None
    if colours == "custom":
        if not (custom or "").strip():
            raise ValueError("`colors` is 'custom' but the palette is empty: type colours like #ff0000, #0000ff")
        colours = custom
    negs = [s.strip() for s in (negatives or "").splitlines() if s.strip()]
    return {"prompt": prompt, "negative_prompts": negs or None, "num_paths": int(num_paths),
            "num_iterations": int(steps), "canvas_size": int(canvas), "max_width": float(max_width),
            "colors": colours, "filled": bool(filled), "init_svg": svg, "seed": int(seed)}


def clipasso_options(image: Any, strokes: float, steps: float, seeds: float, width: float, mask: bool,
                     seed: float) -> dict:
    """The page's values as `CLIPassoPipeline.iterate` keyword arguments."""
    if image is None:
        raise ValueError("`image` is missing: upload a photo to sketch")
    return {"image": image, "num_strokes": int(strokes), "num_iterations": int(steps), "num_seeds": int(seeds),
            "width": float(width), "mask_background": bool(mask), "seed": int(seed)}


PAPER_DEFAULTS = {"num_paths": 256, "draw_steps": 1000, "sketch_steps": 2000, "seeds": 3}  # CLIPDraw / CLIPasso
CPU_DEFAULTS = {"num_paths": 64, "draw_steps": 300, "sketch_steps": 300, "seeds": 2}


def build(clipdraw: Callable[[str, dict], Iterator], clipasso: Callable[[str, str | None, dict], Iterator],
          model_choices: list[str], default_model: str, model_status: Callable[[str], str | None],
          loss_model_choices: list[str] | None = None, default_loss_model: str | None = None,
          cpu: bool = False) -> None:
    """Add the Vector Sketch tab's components to the current Blocks.

    clipdraw(spec, options) -> run generator; options are `CLIPDrawPipeline.iterate` keyword arguments
        (prompt, negative_prompts, num_paths, num_iterations, canvas_size, max_width, colors, filled, init_svg,
        seed).
    clipasso(spec, loss_spec or None, options) -> run generator; options are `CLIPassoPipeline.iterate` keyword
        arguments (image, num_strokes, num_iterations, num_seeds, width, mask_background, seed); loss_spec is the
        CLIP whose ResNet activations drive the geometric loss (None: the same model as spec).
    model_status(spec) -> a message when using that model needs loading first, else None.
    cpu: start the sliders at settings a CPU finishes in minutes (the papers' settings take a GPU).
    """
    loss_choices = [SAME_MODEL] + list(loss_model_choices or [])
    d = CPU_DEFAULTS if cpu else PAPER_DEFAULTS
    with gr.Tab("Vector Sketch", id="sketch"):
        gr.Markdown("Draw with Bézier strokes that CLIP steers: type a prompt (**CLIPDraw**) or upload a photo "
                    "(**CLIPasso**). Previews stream while it works; **Stop** keeps the best result so far."
                    + (" Running on a CPU, the sliders start smaller than the papers' settings (CLIPDraw 256 "
                       "strokes × 1000 steps; CLIPasso 2000 steps × 3 seeds), which take a GPU." if cpu else ""))
        model = gr.Dropdown(model_choices, value=default_model, label="CLIP model", allow_custom_value=True)

        def announce(spec):
            msg = model_status(spec)
            if msg:
                gr.Info(msg)

        def outputs_column():
            preview = gr.Image(label="Live preview", type="pil", interactive=False, height=360)
            progress = gr.HTML()
            score = gr.Markdown()
            with gr.Row():
                svg = gr.File(label="SVG")
                png = gr.File(label="PNG")
            video = gr.Video(label="Optimisation", interactive=False)
            return preview, progress, svg, png, video, score

        def stop_handler(request: gr.Request):
            stop_flag(request.session_hash or "local").set()

        with gr.Tab("Text → drawing (CLIPDraw)"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(EXAMPLE_PROMPTS[0], label="Prompt", lines=2)
                    negatives = gr.Textbox("", label="Negative prompts (one per line, weight 0.3 each)", lines=2,
                                           placeholder="A badly drawn sketch.\nMany ugly, messy drawings.")
                    with gr.Row():
                        num_paths = gr.Slider(1, 1024, value=d["num_paths"], step=1, label="Strokes")
                        steps = gr.Slider(1, 2000, value=d["draw_steps"], step=1, label="Steps")
                    with gr.Row():
                        canvas = gr.Slider(64, 512, value=224, step=16, label="Canvas size (px)")
                        max_width = gr.Slider(1, 100, value=50, step=1, label="Max stroke width (px)")
                    with gr.Row():
                        colours = gr.Dropdown(COLOUR_CHOICES, value="full", label="Colours")
                        custom = gr.Textbox("", label="Custom palette", placeholder="#d62828, #1d4ed8, #111111")
                    with gr.Row():
                        filled = gr.Checkbox(False, label="Filled closed shapes")
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                    svg_in = gr.File(label="Start from an SVG (optional)", file_types=[".svg"])
                    with gr.Row():
                        draw_btn = gr.Button("Draw", variant="primary")
                        stop_btn = gr.Button("Stop", variant="stop")
                with gr.Column():
                    draw_out = outputs_column()

            @user_errors
            def on_draw(spec, p, neg, n, st, cv, mw, col, cust, fill, svg_file, sd, request: gr.Request):
                flag = stop_flag(request.session_hash or "local")
                flag.clear()
                announce(spec)
                options = clipdraw_options(p, neg, n, st, cv, mw, col, cust, fill, svg_file, sd)
                yield from stream(clipdraw(spec, options), flag)

            draw_btn.click(on_draw, [model, prompt, negatives, num_paths, steps, canvas, max_width, colours, custom,
                                     filled, svg_in, seed], list(draw_out), api_name="sketch_clipdraw")
            stop_btn.click(stop_handler, None, None, queue=False, api_name="sketch_clipdraw_stop")

        with gr.Tab("Photo → sketch (CLIPasso)"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="pil", label="Photo", image_mode="RGB")
                    strokes = gr.Slider(4, 64, value=16, step=1, label="Abstraction (strokes: fewer = more abstract)")
                    with gr.Row():
                        sk_steps = gr.Slider(1, 2000, value=d["sketch_steps"], step=1,
                                             label="Steps (stops early when stalled)")
                        seeds = gr.Slider(1, 4, value=d["seeds"], step=1, label="Seeds optimised together")
                    with gr.Row():
                        width = gr.Slider(0.5, 6.0, value=1.5, step=0.25, label="Stroke width (px)")
                        mask = gr.Checkbox(False, label="Remove background (CLIP saliency)")
                    with gr.Row():
                        loss_model = gr.Dropdown(loss_choices, value=default_loss_model or SAME_MODEL,
                                                 label="Loss CLIP (a ResNet, e.g. RN101, as in the paper)",
                                                 allow_custom_value=True)
                        sk_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                    with gr.Row():
                        sketch_btn = gr.Button("Sketch", variant="primary")
                        sk_stop_btn = gr.Button("Stop", variant="stop")
                with gr.Column():
                    sketch_out = outputs_column()

            @user_errors
            def on_sketch(spec, loss_spec, img, n, st, nseeds, w, m, sd, request: gr.Request):
                flag = stop_flag(request.session_hash or "local")
                flag.clear()
                announce(spec)
                options = clipasso_options(img, n, st, nseeds, w, m, sd)
                loss = None if loss_spec in (None, "", SAME_MODEL) else loss_spec
                if loss:
                    announce(loss)
                yield from stream(clipasso(spec, loss, options), flag)

            sketch_btn.click(on_sketch, [model, loss_model, photo, strokes, sk_steps, seeds, width, mask, sk_seed],
                             list(sketch_out), api_name="sketch_clipasso")
            sk_stop_btn.click(stop_handler, None, None, queue=False, api_name="sketch_clipasso_stop")
