"""CLIP Lens tab: zero-shot labels for an image, text search over images, and image − text + text arithmetic.

`build` receives plain functions and the tasks' setting specs (see app.py) and never touches a model. Search and
arithmetic run the one way every tab runs (`studio.ui.common`): a run token, progress for each image embedded,
and the one Stop, after which the ranking of the images embedded so far is shown with its downloads.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import gradio as gr

from studio.ui.common import (
    control,
    drive,
    gpu_bound,
    image_upload,
    model_state_line,
    notice_markdown,
    progress_html,
    run_handler,
    stop_button,
    user_errors,
)

EXAMPLE_LABELS = "a red circle, a blue square, a green triangle, a yellow star, a dog, a cat"


def paths(file_list: Any) -> list:
    """The file paths of a `gr.File(file_count="multiple")` value (strings, or objects with a `name`)."""
    return [f if isinstance(f, str) else getattr(f, "name", f) for f in (file_list or [])]


def stream_ranking(run: Iterator, flag: threading.Event) -> Iterator[tuple]:
    """Drive a search or arithmetic run for the page: (gallery, progress, notice, downloads) tuples.

    While it runs the gallery shows the images embedded so far with their similarities, in gallery order; the
    result (the ranking, or after a Stop the ranking of what was embedded) replaces it, with its files."""
    seen: list[tuple] = []
    total = [0]

    def on_progress(item) -> tuple:
        sim = item.metrics.get("similarity")
        caption = f"{sim:.1f}" if sim is not None else ""
        total[0] = item.total
        if item.preview is not None:
            seen.append((item.preview, caption))
        return list(seen), progress_html(item.step, item.total, f"similarity {caption}"), "", None

    def on_result(result) -> tuple:
        files = [str(p) for p in result.save().values()]
        gallery = [(im, f"{s:.1f}") for im, s in zip(result.images, result.similarities)]
        best = f"best {result.similarities[0]:.1f}" if result.similarities else ""
        state = "stopped" if result.stopped else "done"
        progress = progress_html(result.steps_run, total[0] or result.steps_run, best, state)
        return gallery, progress, notice_markdown(result.notice), files

    yield from drive(run, flag, on_progress, on_result)


def build(classify: Callable, search: Callable, arithmetic: Callable, model_choices: list[str],
          default_model: str, model_status: Callable[[str], str | None], specs: dict[str, dict[str, Any]],
          max_gallery: int, model_state: Callable[[str], str] | None = None) -> None:
    """Add the Lens tab's components to the current Blocks.

    classify(spec, image, labels_text, **settings) -> {"labels": [(label, prob)], "notice": str | None}
    search(spec, files, query, **settings) -> the lens-search task generator (progress items, then the ranking)
    arithmetic(spec, files, query_image, minus, plus, **settings) -> the lens-arithmetic task generator
    model_status(spec) -> a message when using that model needs loading first, else None
    model_state(spec) -> what that model will really run (shown under the dropdown before the first click)
    specs: {task name: {setting: ParamSpec}} of lens-classify, lens-search and lens-arithmetic.
    max_gallery: the most images a search ranks.
    """
    with gr.Tab("CLIP Lens", id="lens"):
        gr.Markdown("Ask CLIP what it sees: rank labels for an image, search your images with words, "
                    "or move an image in embedding space (image − “dog” + “cat”).")
        model = gr.Dropdown(model_choices, value=default_model, label="CLIP model", allow_custom_value=True)
        model_state_line(model, model_state)
        notice = gr.Markdown()

        def announce(spec):
            msg = model_status(spec)
            if msg:
                gr.Info(msg)

        with gr.Tab("Zero-shot labels"):
            with gr.Row():
                with gr.Column():
                    image = image_upload("Image")
                    labels = gr.Textbox(EXAMPLE_LABELS, lines=3, label="Candidate labels (comma or newline separated)")
                    run = gr.Button("Rank labels", variant="primary")
                    with gr.Accordion("Prompt templates", open=False):
                        templates = control("lens-classify", specs["lens-classify"]["templates"])
                with gr.Column():
                    top = gr.Label(num_top_classes=5, label="Top labels", elem_id="lens-top")
                    table = gr.Dataframe(headers=["label", "probability"], datatype=["str", "number"],
                                         label="All labels", interactive=False, elem_id="lens-table")

            @user_errors
            @gpu_bound
            def on_classify(spec, img, text, template_set):
                announce(spec)
                out = classify(spec, img, text, templates=template_set)
                pairs = out["labels"]
                return ({k: float(v) for k, v in pairs}, [[k, round(float(v), 4)] for k, v in pairs],
                        notice_markdown(out.get("notice")))

            run.click(on_classify, [model, image, labels, templates], [top, table, notice], api_name="lens_classify")

        with gr.Tab("Search and arithmetic"):
            token = gr.State(None)  # the running search's token, for the one Stop
            with gr.Row():
                with gr.Column():
                    files = gr.File(file_count="multiple", file_types=["image"],
                                    label=f"Your images (up to {max_gallery})")
                    query = gr.Textbox(label="Search text", placeholder="a photo of a cat")
                    with gr.Row():
                        search_btn = gr.Button("Search", variant="primary")
                        stop_button(token, api_name="lens_stop")
                    with gr.Accordion("Arithmetic: a query image, minus one text, plus another", open=False):
                        query_image = image_upload("Query image", name="query_image")
                        with gr.Row():
                            minus = gr.Textbox(label="minus", placeholder="dog")
                            plus = gr.Textbox(label="plus", placeholder="cat")
                        weight = control("lens-arithmetic", specs["lens-arithmetic"]["weight"])
                        arith_btn = gr.Button("Rank by image − text + text")
                with gr.Column():
                    progress = gr.HTML()
                    results = gr.Gallery(label="Ranked images", columns=4, height="auto")
                    downloads = gr.File(label="Downloads (ranked PNGs with their scores, and the ranking as JSON)",
                                        file_count="multiple", interactive=False)

            def run_search(spec, file_list, text, *, flag):
                announce(spec)
                yield from stream_ranking(search(spec, paths(file_list), text), flag)

            def run_arith(spec, file_list, img, m, p, w, *, flag):
                announce(spec)
                yield from stream_ranking(arithmetic(spec, paths(file_list), img, m, p, weight=w), flag)

            outputs = [token, results, progress, notice, downloads]
            search_btn.click(run_handler(run_search), [model, files, query], outputs, api_name="lens_search")
            arith_btn.click(run_handler(run_arith), [model, files, query_image, minus, plus, weight], outputs,
                            api_name="lens_arithmetic")
