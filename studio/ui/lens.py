"""CLIP Lens tab: zero-shot labels for an image, text search over images, and image − text + text arithmetic.

`build` receives plain functions and the tasks' setting specs (see app.py) and never touches a model. Search and
arithmetic run the one way every tab runs (`studio.ui.common`): a run token, progress for each image embedded,
and the one Stop, after which the ranking of the images embedded so far is shown with its downloads.
"""

from __future__ import annotations

import os
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
    page_text,
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
        return list(seen), progress_html(item.step, item.total, f"similarity {caption}", clock=item.clock), "", None

    def on_result(result) -> tuple:
        files = [str(p) for p in result.save().values()]
        gallery = [(im, f"{s:.1f} · {result.name(i)}" if result.name(i) else f"{s:.1f}")
                   for i, (im, s) in enumerate(zip(result.images, result.similarities))]
        best = f"best {result.similarities[0]:.1f}" if result.similarities else ""
        state = "stopped" if result.stopped else "done"
        progress = progress_html(result.steps_run, total[0] or result.steps_run, best, state, unit="images")
        return gallery, progress, notice_markdown(result.notice), files

    yield from drive(run, flag, on_progress, on_result)


def stream_hits(run: Iterator, flag: threading.Event, root: str) -> Iterator[tuple]:
    """Drive an index search for the page: (gallery, progress, notice, downloads) tuples; captions are the
    similarity and the path inside the indexed folder."""
    def on_progress(item) -> tuple:
        return [], progress_html(item.step, item.total, "searching", clock=item.clock), "", None

    def on_result(result) -> tuple:
        files = [str(p) for p in result.save().values()]
        gallery = [(im, f"{s:.1f} · {os.path.relpath(p, root) if os.path.isabs(p) else p}")
                   for im, p, s in zip(result.images, result.paths, result.similarities)]
        text = f"{len(gallery)} of {result.rows} images" + (f"; {result.hidden} below the threshold hidden"
                                                              if result.hidden else "")
        state = "stopped" if result.stopped else "done"
        return gallery, progress_html(1, 1, text, state, unit=None), notice_markdown(result.notice), files

    yield from drive(run, flag, on_progress, on_result)


def stream_update(run: Iterator, flag: threading.Event, describe: Callable[[], str]) -> Iterator[tuple]:
    """Drive a re-index for the page: (status, progress, contact sheet) tuples; Stop keeps what was indexed."""
    def on_progress(item) -> tuple:
        m = item.metrics
        text = f"images {m.get('images_done', 0)} / {m.get('images_total', 0)}" + (
            f", {m['skipped']} unreadable" if m.get("skipped") else "")
        return gr.update(), progress_html(item.step, item.total, text or item.stage, clock=item.clock), gr.update()

    def on_result(r) -> tuple:
        lines = [describe(), f"{r.new} new, {r.changed} changed, {r.deleted} deleted, {r.unchanged} unchanged; "
                 f"{r.encoded} read" + (" (stopped: the rest is read next time)" if r.stopped else "")]
        if r.skipped:
            lines.append(f"{len(r.skipped)} unreadable, skipped: " + "; ".join(f"`{p}` ({why})"
                                                                             for p, why in r.skipped[:20]))
        state = "stopped" if r.stopped else "done"
        return "\n\n".join(lines), progress_html(r.steps_run, max(1, r.steps_run), "", state), r.image

    yield from drive(run, flag, on_progress, on_result)


def build_index_tab(index: dict, specs: dict[str, dict[str, Any]]) -> None:
    """The "Search the index" sub-tab: the folder the server was started with (`--index DIR`), searched by text in
    rclip's form ("2:a red circle - square"; no file paths: upload an image instead) and/or an uploaded image."""
    with gr.Tab("Search the index"):
        token = gr.State(None)
        status = gr.Markdown(index["describe"]())
        with gr.Row():
            with gr.Column():
                query = gr.Textbox(label="Search text", placeholder='"2:a red circle" - square + star',
                                   info="terms joined by + and −, each with an optional weight W:")
                image = image_upload("Query image (optional: image → image search)", name="query_image")
                top_k = control("lens-index-search", specs["lens-index-search"]["top_k"])
                threshold = control("lens-index-search", specs["lens-index-search"]["threshold"])
                search_btn = gr.Button("Search the index", variant="primary")
                update_btn = gr.Button("Update the index") if index.get("update") else None
                stop_button(token, api_name="lens_index_stop")
            with gr.Column():
                progress = gr.HTML()
                results = gr.Gallery(label="Found images (similarity · path)", columns=4, height="auto")
                sheet = gr.Image(label="Index contents (first images)", visible=update_btn is not None,
                                 interactive=False, height=200)
                notice = gr.Markdown()
                downloads = gr.File(label="Downloads (thumbnails with their scores, and the paths as JSON)",
                                    file_count="multiple", interactive=False)

        def run_search(text, img, k, t, *, flag):
            yield from stream_hits(index["search"](text, img, top_k=k, threshold=t), flag, index["root"])

        search_btn.click(run_handler(run_search), [query, image, top_k, threshold],
                         [token, results, progress, notice, downloads], api_name="lens_index_search")
        if update_btn is not None:
            def run_update(*, flag):
                yield from stream_update(index["update"](), flag, index["describe"])

            update_btn.click(run_handler(run_update), None, [token, status, progress, sheet],
                             api_name="lens_index_update")


def build(classify: Callable, search: Callable, arithmetic: Callable, model_choices: list[str],
          default_model: str, model_status: Callable[[str], str | None], specs: dict[str, dict[str, Any]],
          max_gallery: int, model_state: Callable[[str], str] | None = None, image_search: Callable | None = None,
          index: dict | None = None, video: dict | None = None, detect: dict | None = None,
          custom_models: bool = True) -> None:
    """Add the Lens tab's components to the current Blocks. `custom_models`: the model dropdown takes typed values
    (a local server; a public one offers its list only).

    classify(spec, image, labels_text, **settings) -> {"labels": [(label, prob)], "notice": str | None}
    search(spec, files, query, **settings) -> the lens-search task generator (progress items, then the ranking)
    arithmetic(spec, files, query_image, minus, plus, **settings) -> the lens-arithmetic task generator
    model_status(spec) -> a message when using that model needs loading first, else None
    model_state(spec) -> what that model will really run (shown under the dropdown before the first click)
    specs: {task name: {setting: ParamSpec}} of lens-classify, lens-search and lens-arithmetic.
    max_gallery: the most images a search ranks.
    image_search(spec, files, query_image, **settings) -> the lens-image-search task generator (image → image)
    index: the server's image index (`studio.app.make_lens_functions`): {"search", "update" (None on a public
    server), "describe", "root"}; None: no index tab.
    video, detect: video moment search and open-vocabulary detection (`build_video`, `build_detect`), when given.
    """
    with gr.Tab("CLIP Lens", id="lens"):
        gr.Markdown("Ask CLIP what it sees: rank labels for an image, search your images with words, "
                    "or move an image in embedding space (image − “dog” + “cat”)."
                    + ("" if index is not None else " To search a whole folder of images, index it "
                       "(`clip-studio index DIR`) and start the studio with `--index DIR`: a **Search the index** "
                       "tab appears here."))
        model = gr.Dropdown(model_choices, value=default_model, label="CLIP model",
                            allow_custom_value=custom_models)
        model_state_line(model, model_state)
        notice = gr.Markdown()

        def announce(spec):
            msg = model_status(spec)
            if msg:
                gr.Info(page_text(msg))

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
                    with gr.Accordion("A query image: alone, or minus one text plus another", open=False):
                        query_image = image_upload("Query image", name="query_image")
                        with gr.Row():
                            minus = gr.Textbox(label="minus", placeholder="dog")
                            plus = gr.Textbox(label="plus", placeholder="cat")
                        weight = control("lens-arithmetic", specs["lens-arithmetic"]["weight"])
                        arith_btn = gr.Button("Rank by image − text + text")
                        image_btn = gr.Button("Rank by the query image alone") if image_search else None
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
            if image_btn is not None:
                def run_image(spec, file_list, img, *, flag):
                    announce(spec)
                    yield from stream_ranking(image_search(spec, paths(file_list), img), flag)

                image_btn.click(run_handler(run_image), [model, files, query_image], outputs,
                                api_name="lens_image_search")

        if index is not None:
            build_index_tab(index, specs)

        if video is not None:
            build_video(model, notice, announce, **video)
        if detect is not None:
            build_detect(model, notice, announce, **detect)


def _settings(values: tuple, names: list[str]) -> dict[str, Any]:
    return dict(zip(names, values))


def build_video(model: gr.Dropdown, notice: gr.Markdown, announce: Callable, run: Callable,
                specs: dict[str, Any], suffixes: list[str]) -> None:
    """The "Video moments" sub-tab (CLIFS). run(spec, video_path, query, query_image, **settings) -> the lens-video
    task generator: a progress item per frame indexed (metrics frames_done, eta_s), then the moments."""
    names = [n for n, s in specs.items() if s.control]
    with gr.Tab("Video moments"):
        token = gr.State(None)
        with gr.Row():
            with gr.Column():
                # a file component (our own checks read it), not gr.Video, which re-encodes uploads first
                upload = gr.File(label=f"Video ({', '.join(suffixes)})", file_types=suffixes, type="filepath",
                                 elem_id="lens-video-file")
                query = gr.Textbox(label="Find", placeholder="a white car")
                example = image_upload("…or an example image (optional)", name="query_image")
                with gr.Accordion("Settings", open=False):
                    settings = [control("lens-video", specs[n]) for n in names]
                with gr.Row():
                    find = gr.Button("Find moments", variant="primary")
                    stop_button(token, api_name="lens_video_stop")
            with gr.Column():
                progress = gr.HTML()
                now = gr.Image(label="Indexing", interactive=False, height=180, visible=True)
                found = gr.Gallery(label="Moments (best first)", columns=3, height="auto")
                clip = gr.Video(label="Best moment", interactive=False)
                downloads = gr.File(label="Downloads (clips, thumbnails, moments as JSON)", file_count="multiple",
                                    interactive=False)

        def on_find(spec, path, text, img, *values, flag):
            if not path:
                raise ValueError("`video` is missing: upload a video")
            announce(spec)
            gen = run(spec, path, (text.strip() or None) if isinstance(text, str) else None, img,
                      **_settings(values, names))

            total = [0]  # frames the run set out to search (the result knows only those it searched)

            def on_progress(item):
                total[0] = item.total
                text = f"frames {item.step} / {item.total}"
                if item.stage == "clips":  # then the moments' thumbnails and clips, a step each
                    text = f"moment clips {item.metrics.get('clips_done', 0):.0f}"
                bar = progress_html(item.step, item.total, text, clock=item.clock)
                return (bar, gr.update() if item.preview is None else item.preview, gr.update(), gr.update(), "", None)

            def on_result(result):
                files = result.save()
                gallery = [(m.thumbnail, m.label()) for m in result.moments]
                state = "stopped" if result.stopped else "done"
                of = max(total[0], result.steps_run)
                word = ("from the cache" if result.cached else f"{result.steps_run} of {of} frames searched"
                        if result.stopped else f"{result.steps_run} frames indexed")
                bar = progress_html(result.steps_run, of if result.stopped and not result.cached else result.steps_run,
                                    f"{len(result.moments)} moments · {word}", state)
                return (bar, None, gallery, str(files["clip0"]) if "clip0" in files else None,
                        notice_markdown(result.notice), [str(p) for p in files.values()])

            yield from drive(gen, flag, on_progress, on_result)

        find.click(run_handler(on_find), [model, upload, query, example, *settings],
                   [token, progress, now, found, clip, notice, downloads], api_name="lens_video")


def build_detect(model: gr.Dropdown, notice: gr.Markdown, announce: Callable, run: Callable,
                 specs: dict[str, Any], detectors: list[str]) -> None:
    """The "Find objects" sub-tab (ViLD). run(spec, detector, image, queries, query_image, **settings) -> the
    lens-detect task generator: a progress item per batch of proposals, then the labelled boxes."""
    names = [n for n, s in specs.items() if s.control]
    with gr.Tab("Find objects"):
        token = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = image_upload("Image")
                queries = gr.Textbox("a blue square, a red circle", lines=2,
                                     label="What to find (comma or newline separated)")
                example = image_upload("…or an example crop (optional)", name="query_image")
                detector = gr.Dropdown(detectors, value=detectors[0], label="Detector",
                                       info="clip: regions named by the CLIP above (ViLD); OWL-ViT where its "
                                            "weights are on this machine")
                with gr.Accordion("Settings", open=False):
                    settings = [control("lens-detect", specs[n]) for n in names]
                with gr.Row():
                    go = gr.Button("Find objects", variant="primary")
                    stop_button(token, api_name="lens_detect_stop")
            with gr.Column():
                progress = gr.HTML()
                boxes = gr.AnnotatedImage(label="Boxes", elem_id="lens-boxes")
                downloads = gr.File(label="Downloads (the image with boxes, COCO JSON)", file_count="multiple",
                                    interactive=False)

        def on_detect(spec, det, img, text, crop, *values, flag):
            if not img:
                raise ValueError("`image` is missing: upload an image")
            announce(spec)
            gen = run(spec, det, img, text, crop, **_settings(values, names))

            def on_progress(item):
                boxes = f"{item.metrics.get('boxes', 0):.0f} boxes so far"
                bar = progress_html(item.step, item.total, boxes, clock=item.clock)
                return bar, (item.preview, []) if item.preview is not None else gr.update(), "", None

            def on_result(result):
                files = result.save()
                state = "stopped" if result.stopped else "done"
                bar = progress_html(result.steps_run, result.steps_run, f"{len(result.boxes)} boxes from "
                                    f"{result.proposals} proposals", state, unit=None)
                return (bar, (result.source, result.annotations()), notice_markdown(result.notice),
                        [str(p) for p in files.values()])

            yield from drive(gen, flag, on_progress, on_result)

        go.click(run_handler(on_detect), [model, detector, image, queries, example, *settings],
                 [token, progress, boxes, notice, downloads], api_name="lens_detect")
