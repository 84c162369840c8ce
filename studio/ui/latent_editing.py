"""Latent Editing tab: StyleCLIP on a StyleGAN2 generator -- latent optimisation, global directions, inversion.

`build` receives plain functions (made by `pipelines.styleclip.make_ui_functions`, wired in app.py) and never
touches a model or torch.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from studio.media import save_gif
from studio.ui.common import notice_markdown, user_errors

IMAGE_HEIGHT = 300  # px of the image boxes
MIN_SHOWN = 256  # px: smaller images (the demo generator's are 64 px) are shown enlarged, pixel for pixel


def shown(image):
    """An image as the page shows it: enlarged by a whole factor (nearest neighbour) to at least MIN_SHOWN px,
    since the browser will not enlarge it (the GIF too). The state and the Python API keep the real size."""
    if image is None:
        return None
    import numpy as np

    arr = np.asarray(image)
    factor = -(-MIN_SHOWN // max(arr.shape[:2]))  # ceil
    return arr if factor <= 1 else arr.repeat(factor, axis=0).repeat(factor, axis=1)

OFFLINE_HELP = (
    "Without a StyleGAN2 checkpoint the tab uses the bundled **demo-shapes** generator (one soft shape on a "
    "plain background), which the demo CLIP `shapes-clip` understands: try “a red circle” or “a blue star”. "
    "For faces or scenes pick **ffhq-1024**, **car-512**, **cat-256**, **church-256** or **horse-256**: "
    "each is downloaded once from the Hugging Face Hub and then cached. Or put a rosinality-format `.pt` in "
    "`~/.cache/studio/stylegan2/`, or type its path here (or set `STUDIO_STYLEGAN`), and pick a real CLIP "
    "(ViT-B-32/openai)."
)


def build(sample: Callable, invert: Callable, edit: Callable, relevance: Callable, global_edit: Callable,
          generator_choices: list[str], default_generator: str, clip_choices: list[str], default_clip: str) -> None:
    """Add the Latent Editing tab to the current Blocks.

    sample(generator, clip, seed, truncation) -> {"image", "state", "info", "notice"}
    invert(generator, clip, image, steps, progress(done, total)) -> {"image", "target", "state", "info", "notice"}
    edit(generator, clip, state, seed, prompt, steps, l2_weight, id_weight, strength) -> yields
        {"preview", "progress"} then {"preview", "before", "after", "frames", "state", "progress", "info", "notice"}
    relevance(generator, clip, num_samples, progress(done, total)) -> status text
    global_edit(generator, clip, state, seed, neutral, target, alpha, beta, num_samples) ->
        {"before", "after", "info", "notice"}
    Images are (H, W, 3) uint8 arrays; `state` is opaque here.
    """
    with gr.Tab("Latent Editing", id="latent"):
        gr.Markdown("Edit a generated or uploaded image with words (StyleCLIP, Patashnik et al. 2021): "
                    "optimise its latent towards a prompt, or move it along a global direction from a neutral "
                    "to a target text. " + OFFLINE_HELP)
        with gr.Row():
            generator = gr.Dropdown(generator_choices, value=default_generator, label="Generator",
                                    allow_custom_value=True, info="a name or a checkpoint path")
            clip = gr.Dropdown(clip_choices, value=default_clip, label="CLIP model", allow_custom_value=True)
        notice = gr.Markdown()
        state = gr.State(None)

        # -- the image to edit: a random sample or an inverted upload ------------------------------------------
        with gr.Row():
            with gr.Column():
                gr.Markdown("**1. Pick an image**: a random sample, or upload one to invert.")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                    truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation")
                sample_btn = gr.Button("Random sample", variant="primary")
                upload = gr.Image(type="pil", label="Or upload an image", image_mode="RGB")
                invert_steps = gr.Slider(10, 1000, value=200, step=10, label="Inversion steps")
                invert_btn = gr.Button("Invert upload")
            with gr.Column():
                current = gr.Image(label="Image to edit", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                source_info = gr.Markdown()

        @user_errors
        def on_sample(gen, clip_spec, s, trunc):
            out = sample(gen, clip_spec, int(s), float(trunc))
            return shown(out["image"]), out["state"], out["info"], notice_markdown(out.get("notice"))

        @user_errors
        def on_invert(gen, clip_spec, image, steps, progress=gr.Progress()):
            if image is None:
                raise ValueError("`image` is missing: upload an image to invert")
            out = invert(gen, clip_spec, image, int(steps), lambda done, total: progress((done, total), desc="steps"))
            return shown(out["image"]), out["state"], out["info"], notice_markdown(out.get("notice"))

        sample_btn.click(on_sample, [generator, clip, seed, truncation], [current, state, source_info, notice],
                         api_name="latent_sample")
        invert_btn.click(on_invert, [generator, clip, upload, invert_steps], [current, state, source_info, notice],
                         api_name="latent_invert")

        gr.Markdown("**2. Edit it**")
        with gr.Tab("Latent optimisation"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", placeholder="a red circle / a smiling face")
                    steps = gr.Slider(1, 1000, value=300, step=1, label="Steps (StyleCLIP: 300)")
                    l2_weight = gr.Slider(0.0, 0.1, value=0.008, step=0.001, label="L2 weight (stay near the start)")
                    id_weight = gr.Slider(0.0, 1.0, value=0.005, step=0.005,
                                          label="Identity weight (CLIP similarity to the start)")
                    strength = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Strength")
                    with gr.Row():
                        run = gr.Button("Edit", variant="primary")
                        stop = gr.Button("Stop")
                    progress_md = gr.Markdown()
                with gr.Column():
                    preview = gr.Image(label="Live preview", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    with gr.Row():
                        before = gr.Image(label="Before", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                        after = gr.Image(label="After", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    edit_info = gr.Markdown()
                    animation = gr.File(label="The optimisation as a GIF", interactive=False)

            @user_errors
            def on_edit(gen, clip_spec, st, s, text, n, l2, idw, strg):
                for out in edit(gen, clip_spec, st, int(s), text, int(n), float(l2), float(idw), float(strg)):
                    if "after" in out:
                        frames = [shown(f) for f in (out["before"], *out.get("frames", []))]
                        gif = str(save_gif(frames, fps=8)) if len(frames) > 1 else None
                        yield (shown(out["preview"]), shown(out["before"]), shown(out["after"]), out["progress"],
                               out["info"],
                               out["state"], notice_markdown(out.get("notice")), gif)
                    else:
                        yield (shown(out["preview"]), gr.skip(), gr.skip(), out["progress"], gr.skip(), gr.skip(),
                               gr.skip(), gr.skip())

            event = run.click(on_edit, [generator, clip, state, seed, prompt, steps, l2_weight, id_weight, strength],
                              [preview, before, after, progress_md, edit_info, state, notice, animation],
                              api_name="latent_edit")
            stop.click(None, cancels=[event])

        with gr.Tab("Global direction"):
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        neutral = gr.Textbox(label="Neutral text", placeholder="a circle / a face")
                        target = gr.Textbox(label="Target text", placeholder="a red circle / a smiling face")
                    alpha = gr.Slider(-10.0, 10.0, value=4.1, step=0.1, label="α: strength (std units)")
                    beta = gr.Slider(0.0, 0.5, value=0.15, step=0.01,
                                     label="β: disentanglement (keep channels with relevance ≥ β)")
                    num_samples = gr.Slider(1, 500, value=100, step=1,
                                            label="Relevance samples (computed once per generator, then cached)")
                    with gr.Row():
                        precompute = gr.Button("Precompute relevance")
                        apply_btn = gr.Button("Apply", variant="primary")
                    rel_md = gr.Markdown()
                with gr.Column():
                    with gr.Row():
                        g_before = gr.Image(label="Before", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                        g_after = gr.Image(label="After", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    g_info = gr.Markdown()

            @user_errors
            def on_precompute(gen, clip_spec, n, progress=gr.Progress()):
                return relevance(gen, clip_spec, int(n), lambda done, total: progress((done, total), desc="samples"))

            @user_errors
            def on_global(gen, clip_spec, st, s, neu, tgt, a, b, n, progress=gr.Progress()):
                progress(0, desc="channel relevance (first use only)")
                out = global_edit(gen, clip_spec, st, int(s), neu, tgt, float(a), float(b), int(n))
                return shown(out["before"]), shown(out["after"]), out["info"], notice_markdown(out.get("notice"))

            precompute.click(on_precompute, [generator, clip, num_samples], [rel_md], api_name="latent_relevance")
            g_inputs = [generator, clip, state, seed, neutral, target, alpha, beta, num_samples]
            g_outputs = [g_before, g_after, g_info, notice]
            apply_btn.click(on_global, g_inputs, g_outputs, api_name="latent_global")

            def on_slider(gen, clip_spec, st, s, neu, tgt, a, b, n):
                if not (neu or "").strip() or not (tgt or "").strip():  # nothing to apply yet: stay quiet
                    return gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return on_global(gen, clip_spec, st, s, neu, tgt, a, b, n)

            # sliders re-apply on release: an edit is one generator pass once the relevance is cached
            alpha.release(on_slider, g_inputs, g_outputs, api_visibility="private", trigger_mode="always_last")
            beta.release(on_slider, g_inputs, g_outputs, api_visibility="private", trigger_mode="always_last")
