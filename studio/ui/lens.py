"""CLIP Lens tab: zero-shot labels for an image, text search over images, and image − text + text arithmetic.

`build` receives plain functions (see app.py) and never touches a model.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from studio.ui.common import notice_markdown, user_errors

EXAMPLE_LABELS = "a red circle, a blue square, a green triangle, a yellow star, a dog, a cat"


def build(classify: Callable, search: Callable, arithmetic: Callable, model_choices: list[str],
          default_model: str, model_status: Callable[[str], str | None]) -> None:
    """Add the Lens tab's components to the current Blocks.

    classify(spec, image, labels_text) -> {"labels": [(label, prob)], "notice": str | None}
    search(spec, files, query) -> {"gallery": [(image, caption)], "notice": ...}
    arithmetic(spec, files, query_image, minus, plus, weight) -> {"gallery": [(image, caption)], "notice": ...}
    model_status(spec) -> a message when using that model needs loading first, else None
    """
    with gr.Tab("CLIP Lens", id="lens"):
        gr.Markdown("Ask CLIP what it sees: rank labels for an image, search your images with words, "
                    "or move an image in embedding space (image − “dog” + “cat”).")
        model = gr.Dropdown(model_choices, value=default_model, label="CLIP model", allow_custom_value=True)
        notice = gr.Markdown()

        def announce(spec):
            msg = model_status(spec)
            if msg:
                gr.Info(msg)

        with gr.Tab("Zero-shot labels"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="pil", label="Image", image_mode="RGB")
                    labels = gr.Textbox(EXAMPLE_LABELS, lines=3, label="Candidate labels (comma or newline separated)")
                    run = gr.Button("Rank labels", variant="primary")
                with gr.Column():
                    top = gr.Label(num_top_classes=5, label="Top labels", elem_id="lens-top")
                    table = gr.Dataframe(headers=["label", "probability"], datatype=["str", "number"],
                                         label="All labels", interactive=False, elem_id="lens-table")

            @user_errors
            def on_classify(spec, img, text):
                announce(spec)
                out = classify(spec, img, text)
                pairs = out["labels"]
                return ({k: float(v) for k, v in pairs}, [[k, round(float(v), 4)] for k, v in pairs],
                        notice_markdown(out.get("notice")))

            run.click(on_classify, [model, image, labels], [top, table, notice], api_name="lens_classify")

        with gr.Tab("Search and arithmetic"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(file_count="multiple", file_types=["image"], label="Your images (up to 64)")
                    query = gr.Textbox(label="Search text", placeholder="a photo of a cat")
                    search_btn = gr.Button("Search", variant="primary")
                    gr.Markdown("**Arithmetic**: a query image, minus one text, plus another.")
                    query_image = gr.Image(type="pil", label="Query image", image_mode="RGB")
                    with gr.Row():
                        minus = gr.Textbox(label="minus", placeholder="dog")
                        plus = gr.Textbox(label="plus", placeholder="cat")
                    weight = gr.Slider(0.0, 3.0, value=1.0, step=0.1, label="Text weight")
                    arith_btn = gr.Button("Rank by image − text + text")
                with gr.Column():
                    results = gr.Gallery(label="Ranked images", columns=4, height="auto")

            def paths(file_list):
                return [f if isinstance(f, str) else getattr(f, "name", f) for f in (file_list or [])]

            @user_errors
            def on_search(spec, file_list, text):
                announce(spec)
                out = search(spec, paths(file_list), text)
                return out["gallery"], notice_markdown(out.get("notice"))

            @user_errors
            def on_arith(spec, file_list, img, m, p, w):
                announce(spec)
                out = arithmetic(spec, paths(file_list), img, m, p, w)
                return out["gallery"], notice_markdown(out.get("notice"))

            search_btn.click(on_search, [model, files, query], [results, notice], api_name="lens_search")
            arith_btn.click(on_arith, [model, files, query_image, minus, plus, weight], [results, notice],
                            api_name="lens_arithmetic")
