"""Latent Editing tab: StyleCLIP on a StyleGAN2 generator -- latent optimisation, global directions, the latent
mapper, inversion.

`build` receives plain functions (made by `studio.app.make_latent_functions`) and the tasks' settings specs, and
never touches a model or torch. The long runs (inversion, an edit, the relevance precompute, a global direction)
are the pipeline's task generators, driven here with the one Stop (`studio.ui.common`): a Stop ends the run with
its best result so far, which is shown like any other, with its downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np

from studio.media import save_gif
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

IMAGE_HEIGHT = 300  # px of the image boxes
MIN_SHOWN = 256  # px: smaller images (the demo generator's are 64 px) are shown enlarged, pixel for pixel
EDIT, GLOBAL, INVERT, RELEVANCE = "styleclip-edit", "styleclip-global", "styleclip-invert", "styleclip-relevance"
EDIT_FIELDS = ("num_steps", "l2_weight", "id_weight", "strength", "work_in_stylespace")  # the edit's controls
MAPPER, APPLY = "styleclip-mapper", "styleclip-mapper-apply"
MAPPER_FIELDS = ("num_steps", "batch_size", "l2_weight", "id_weight")  # the mapper training's controls, in order


def shown(image: Any) -> np.ndarray | None:
    """An image (PIL or array) as the page shows it: enlarged by a whole factor (nearest neighbour) to at least
    MIN_SHOWN px, since the browser will not enlarge it (the GIF too). Results keep the real size."""
    if image is None:
        return None
    arr = np.asarray(image)
    factor = -(-MIN_SHOWN // max(arr.shape[:2]))  # ceil
    return arr if factor <= 1 else arr.repeat(factor, axis=0).repeat(factor, axis=1)


OFFLINE_HELP = (
    "Without a StyleGAN2 checkpoint the tab uses the bundled **demo-shapes** generator (one soft shape on a "
    "plain background), which the demo CLIP `shapes-clip` understands: try “a red circle” or “a blue star”. "
    "For faces or scenes pick **ffhq-1024**, **car-512**, **cat-256**, **church-256** or **horse-256**: "
    "each is downloaded once from the Hugging Face Hub and then cached. Or put a rosinality-format `.pt` in "
    "`~/.cache/studio/stylegan2/`, or type its path here (or set `STUDIO_STYLEGAN`), and pick a real CLIP "
    "(ViT-B-32/openai). NVIDIA StyleGAN2-ADA `.pkl` files work too (read without running code from them, then "
    "converted once). With StyleCLIP's `fs3.npy` saved next to the checkpoint as `<checkpoint name>.fs3.npy`, "
    "global directions need no precompute."
)


def _status(item: Any) -> str:
    """The text after a progress bar: the stage and the loss, where there are."""
    parts = [item.stage] if item.stage else []
    if "loss" in item.metrics:
        parts.append(f"loss {item.metrics['loss']:.4f}")
    if "eta_s" in item.metrics:  # the relevance precompute: samples done and the time left at this run's pace
        eta = item.metrics["eta_s"]
        parts.append(f"{item.metrics['samples']} samples done, about "
                     + (f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s") + " left")
    return " · ".join(parts)


class _Bar:
    """The progress bar of one run: remembers the total, for the line shown with the result."""

    def __init__(self) -> None:
        self.total = 0

    def running(self, item: Any) -> str:
        self.total = item.total
        return progress_html(item.step, item.total, _status(item), clock=item.clock)

    def end(self, result: Any, text: str = "") -> str:
        if not self.total:  # nothing ran: the result was at hand (a cached relevance)
            return progress_html(0, 0, text, "done")
        return progress_html(result.steps_run, self.total, text, "stopped" if result.stopped else "done")


def build(sample: Callable, invert: Callable, edit: Callable, relevance: Callable, global_edit: Callable,
          specs: dict[str, dict[str, Any]], generator_choices: list[str], default_generator: str,
          clip_choices: list[str], default_clip: str, cpu: bool = False, train_mapper: Callable | None = None,
          apply_mapper: Callable | None = None, model_state: Callable[[str, str], str] | None = None,
          custom_models: bool = True) -> None:
    """Add the Latent Editing tab to the current Blocks. `custom_models`: the dropdowns take typed values (a local
    server; a public one offers its list only).

    sample(generator, clip, settings) -> a result (`.image` PIL, `.seed`, `.settings`, `.notice`)
    invert(generator, clip, image, settings) -> a run: progress items, then a result (`.image`, `.scores` mse, psnr,
        start_mse, `.steps_run`, `.stopped`, `.timings`, `.notice`)
    edit(generator, clip, state, prompt, settings) -> a run ending with `.image`, `.original`, `.frames`,
        `.scores` (clip_score, clip_score_before, l2), `.save(...)`
    relevance(generator, clip, settings) -> a run ending with `.scores` (channels, samples), `.cached`, `.relevance`
    global_edit(generator, clip, state, neutral, target, settings) -> a run ending with `.image`, `.original`,
        `.num_channels`, `.top_channels`, `.scores`
    train_mapper(generator, clip, prompt, settings) -> a run ending with `.image` (held-out starts over edits),
        `.scores` (eval_clip_loss_before, eval_clip_loss), `.save(...)` (the mapper's .safetensors as "mapper")
    apply_mapper(generator, clip, state, trained, upload, settings) -> a run ending with `.image`, `.original`,
        `.scores`; `trained` is a training's result, `upload` a .safetensors path (either may be None)
    specs: {task name: {setting: ParamSpec}} for styleclip-edit, -global, -invert and -relevance (and -mapper,
    -mapper-apply when the mapper functions are given); the controls come from them. `state` is what the tab keeps
    between runs: {"generator", "clip", "result"}, read by the functions.
    model_state(generator, clip) -> what that pair will really run (shown under the dropdowns before the first click).
    """
    def make(task: str, name: str) -> gr.components.Component:
        return control(task, specs[task][name], cpu=cpu)

    def keep(gen: str, clip_spec: str, result: Any) -> dict:
        return {"generator": gen, "clip": clip_spec, "result": result}

    with gr.Tab("Latent Editing", id="latent"):
        gr.Markdown("Edit an image with words (StyleCLIP, Patashnik et al. 2021): optimise its latent towards a "
                    "prompt, or move it along a global direction. **Stop** keeps the best result so far.")
        with gr.Accordion("Generators and checkpoints", open=False):
            gr.Markdown(OFFLINE_HELP)
        with gr.Row():
            generator = gr.Dropdown(generator_choices, value=default_generator, allow_custom_value=custom_models,
                                    label="Generator (a name or a checkpoint path)" if custom_models
                                    else "Generator")
            clip = gr.Dropdown(clip_choices, value=default_clip, label="CLIP model",
                               allow_custom_value=custom_models)
        model_state_line([generator, clip], model_state)
        notice = gr.Markdown()
        state = gr.State(None)
        token = gr.State(None)  # the running run, for the Stop buttons

        # -- the image to edit: a random sample or an inverted upload ------------------------------------------
        with gr.Row():
            with gr.Column():
                gr.Markdown("**1. Pick an image**: a random sample, or upload one to invert.")
                with gr.Row():
                    seed = make(EDIT, "seed")
                    truncation = make(EDIT, "truncation")
                sample_btn = gr.Button("Random sample", variant="primary")
                with gr.Accordion("Or invert an uploaded image", open=False):  # optional: folded
                    upload = image_upload("Image to invert")
                    invert_steps = make(INVERT, "num_steps")
                    with gr.Row():
                        invert_perceptual = make(INVERT, "perceptual_weight")
                        invert_init = make(INVERT, "init")
                    with gr.Row():
                        invert_btn = gr.Button("Invert upload")
                        stop_button(token, api_name="latent_stop_invert")
                invert_progress = gr.HTML()
            with gr.Column():
                current = gr.Image(label="Image to edit", type="numpy", interactive=False, height=MIN_SHOWN)
                source_info = gr.Markdown()

        @user_errors
        @gpu_bound
        def on_sample(gen, clip_spec, s, trunc):
            out = sample(gen, clip_spec, {"seed": s, "truncation": trunc})
            info = f"Random sample, seed {out.seed}, truncation {out.settings['truncation']:g}"
            return shown(out.image), keep(gen, clip_spec, out), info, notice_markdown(out.notice)

        def on_invert(gen, clip_spec, image, n, s, perceptual, init, flag):
            bar, skip = _Bar(), gr.skip()

            def progress(item):
                return shown(item.preview) if item.preview is not None else skip, skip, skip, bar.running(item), skip

            def result(out):
                sc = out.scores
                # The kept iterate is the one with the lowest combined loss (pixel, perceptual and CLIP terms), the one
                # minimised: said first, since the MSE alone can end above its start (issue 29)
                info = (f"Loss minimised (pixel + perceptual + CLIP terms) {sc['start_loss']:.4f} → {sc['loss']:.4f}; "
                        f"reconstruction MSE {sc['mse']:.4f} (start {sc['start_mse']:.4f}; PSNR {sc['psnr']:.1f} dB)"
                        + (f", perceptual distance {sc['perceptual']:.3f}" if "perceptual" in sc else "")
                        + (f"; started from the e4e encoder's guess (MSE {sc['encoder_mse']:.4f})"
                           if "encoder_mse" in sc else "")
                        + f" after {out.steps_run} steps, {out.timings['total_s']:.1f} s"
                        + (f"; stopped: the best iterate so far (step {sc['best_step']})" if out.stopped else ""))
                return (shown(out.image), keep(gen, clip_spec, out), info, bar.end(out),
                        notice_markdown(out.notice))

            settings = {"num_steps": n, "seed": s, "perceptual_weight": perceptual, "init": init}
            yield from drive(invert(gen, clip_spec, image, settings), flag, progress, result)

        sample_btn.click(on_sample, [generator, clip, seed, truncation], [current, state, source_info, notice],
                         api_name="latent_sample")
        invert_btn.click(run_handler(on_invert), [generator, clip, upload, invert_steps, seed, invert_perceptual,
                                                  invert_init],
                         [token, current, state, source_info, invert_progress, notice], api_name="latent_invert")

        gr.Markdown("**2. Edit it**")
        with gr.Tab("Latent optimisation"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", placeholder="a red circle / a smiling face")
                    with gr.Row():
                        run = gr.Button("Edit", variant="primary")
                        stop_button(token, api_name="latent_stop_edit")
                    edit_progress = gr.HTML()
                    edit_controls = [make(EDIT, name) for name in EDIT_FIELDS]
                with gr.Column():
                    preview = gr.Image(label="Live preview", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    with gr.Row():
                        before = gr.Image(label="Before", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                        after = gr.Image(label="After", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    edit_info = gr.Markdown()
                    with gr.Row():
                        animation = gr.File(label="The optimisation as a GIF", interactive=False)
                        download = gr.File(label="The edit as PNG (settings inside)", interactive=False)

            def on_edit(gen, clip_spec, st, s, trunc, text, *values, flag):
                bar, skip = _Bar(), gr.skip()
                settings = {"seed": s, "truncation": trunc, **dict(zip(EDIT_FIELDS, values))}

                def progress(item):
                    image = shown(item.preview) if item.preview is not None else skip
                    return image, skip, skip, bar.running(item), skip, skip, skip, skip, skip

                def result(out):
                    sc = out.scores
                    frames = [shown(f) for f in out.frames]
                    gif = str(save_gif(frames, fps=8)) if len(frames) > 1 else None
                    png = str(out.save(video="gif")["png"])
                    info = f"CLIPScore for “{out.prompt}”: {sc['clip_score_before']:.1f} → {sc['clip_score']:.1f}"
                    if "clip_score_augmented" in sc:  # the optimised view can be gamed; these views were not seen
                        info += (f" (on augmented views it was not optimised on, the honest reading: "
                                 f"{sc['clip_score_augmented_before']:.1f} → {sc['clip_score_augmented']:.1f})")
                    if "l2" in sc:
                        info += f"; ‖w − w₀‖² = {sc['l2']:.3f}, kept step {sc['best_step']} (lowest loss)"
                    line = f"{1000 * out.timings['per_step_s']:.0f} ms/step"
                    return (shown(out.image), shown(out.original), shown(out.image), bar.end(out, line), info,
                            keep(gen, clip_spec, out), notice_markdown(out.notice), gif, png)

                yield from drive(edit(gen, clip_spec, st, text, settings), flag, progress, result)

            run.click(run_handler(on_edit), [generator, clip, state, seed, truncation, prompt, *edit_controls],
                      [token, preview, before, after, edit_progress, edit_info, state, notice, animation, download],
                      api_name="latent_edit")

        with gr.Tab("Global direction"):
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        neutral = gr.Textbox(label="Neutral text", placeholder="a circle / a face")
                        target = gr.Textbox(label="Target text", placeholder="a red circle / a smiling face")
                    with gr.Row():
                        apply_btn = gr.Button("Apply", variant="primary")
                        stop_button(token, api_name="latent_stop_global")
                    g_progress = gr.HTML()
                    alpha = make(GLOBAL, "alpha")
                    beta = make(GLOBAL, "beta")
                    num_samples = make(RELEVANCE, "num_samples")
                    precompute = gr.Button("Precompute relevance")
                    rel_md = gr.Markdown()
                with gr.Column():
                    with gr.Row():
                        g_before = gr.Image(label="Before", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                        g_after = gr.Image(label="After", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    g_info = gr.Markdown()

            def on_precompute(gen, clip_spec, n, flag):
                bar, skip = _Bar(), gr.skip()

                def result(out):
                    rel, sc = out.relevance, out.scores
                    if out.stopped:
                        text = (f"Stopped after {sc['samples']} of {n} samples: they are kept on disk, and the next "
                                "Precompute (or Apply) goes on from there.")
                    elif out.cached:
                        text = f"Channel relevance is cached: {sc['channels']} channels, {rel.num_samples} samples."
                    else:
                        resumed = sc.get("resumed_from", 0)
                        text = (f"Channel relevance ready: {sc['channels']} channels, {sc['samples']} samples "
                                + (f"({resumed} from the earlier run) " if resumed else "")
                                + f"({out.timings['total_s']:.1f} s; cached at {rel.path})")
                    return bar.end(out, "read from the cache" if out.cached else ""), text

                yield from drive(relevance(gen, clip_spec, {"num_samples": n}), flag,
                                 lambda item: (bar.running(item), skip), result)

            def on_global(gen, clip_spec, st, s, trunc, neu, tgt, a, b, n, flag):
                bar, skip = _Bar(), gr.skip()
                settings = {"seed": s, "truncation": trunc, "alpha": a, "beta": b, "num_samples": n}

                def result(out):
                    sc = out.scores
                    if out.stopped:
                        info = ("Stopped before the edit: the channel relevance is not finished (the samples done "
                                "are kept on disk for the next run).")
                    else:
                        top = ", ".join(f"{name}[{c}] {r:+.2f}" for name, c, r in out.top_channels[:5])
                        origin = ("StyleCLIP's published directions" if out.directions == "published"
                                  else "computed relevance")
                        down = " (down: see the notice above)" if sc["clip_score"] < sc["clip_score_before"] else ""
                        info = (f"{out.num_channels} channels moved ({origin}; α {out.settings['alpha']:g}, β "
                                f"{out.settings['beta']:g}); CLIPScore for “{out.target}”: "
                                f"{sc['clip_score_before']:.1f} → {sc['clip_score']:.1f}"
                                f"{down}; "
                                f"{1000 * out.timings['edit_s']:.0f} ms. Top channels: {top}")
                    return (shown(out.original), shown(out.image), bar.end(out), info,
                            notice_markdown(out.notice))

                yield from drive(global_edit(gen, clip_spec, st, neu, tgt, settings), flag,
                                 lambda item: (skip, skip, bar.running(item), skip, skip), result)

            def on_slider(gen, clip_spec, st, s, trunc, neu, tgt, a, b, n, flag):
                if not (neu or "").strip() or not (tgt or "").strip():  # nothing to apply yet: stay quiet
                    yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                    return
                yield from on_global(gen, clip_spec, st, s, trunc, neu, tgt, a, b, n, flag=flag)

            precompute.click(run_handler(on_precompute), [generator, clip, num_samples], [token, g_progress, rel_md],
                             api_name="latent_relevance")
            g_inputs = [generator, clip, state, seed, truncation, neutral, target, alpha, beta, num_samples]
            g_outputs = [token, g_before, g_after, g_progress, g_info, notice]
            apply_btn.click(run_handler(on_global), g_inputs, g_outputs, api_name="latent_global")

            # sliders re-apply on release: an edit is one generator pass once the relevance is cached
            slider = run_handler(on_slider)
            alpha.release(slider, g_inputs, g_outputs, api_visibility="private", trigger_mode="always_last")
            beta.release(slider, g_inputs, g_outputs, api_visibility="private", trigger_mode="always_last")

        if train_mapper is not None and apply_mapper is not None:
            _mapper_tab(make, token, generator, clip, state, seed, truncation, notice, train_mapper, apply_mapper)


def _mapper_tab(make: Callable, token: gr.State, generator: gr.Dropdown, clip: gr.Dropdown, state: gr.State,
                seed: gr.components.Component, truncation: gr.components.Component, notice: gr.Markdown,
                train_mapper: Callable, apply_mapper: Callable) -> None:
    """The "Latent mapper" sub-tab (StyleCLIP's method 2): train a mapper for a prompt, then edit the image to edit
    with it in one forward pass, at a strength; or upload a mapper trained before (ours, or one of StyleCLIP's
    `.pt` checkpoints)."""
    with gr.Tab("Latent mapper"):
        gr.Markdown("Train a mapper for one prompt on random samples of the generator (StyleCLIP's second method); "
                    "it then edits any image in one forward pass. **Stop** keeps the mapper trained so far.")
        with gr.Row():
            with gr.Column():
                m_prompt = gr.Textbox(label="Prompt the mapper learns", placeholder="a red circle / a smiling face")
                m_controls = [make(MAPPER, name) for name in MAPPER_FIELDS]
                with gr.Row():
                    train_btn = gr.Button("Train mapper", variant="primary")
                    stop_button(token, api_name="latent_stop_mapper")
                m_progress = gr.HTML()
                m_info = gr.Markdown()
                m_file = gr.File(label="The mapper (.safetensors, prompt and settings inside)", interactive=False)
                m_upload = gr.File(label="Or upload a mapper (.safetensors, or a StyleCLIP .pt such as its "
                                         "published FFHQ mappers)", file_types=[".safetensors", ".pt"],
                                   type="filepath")
                m_strength = make(APPLY, "strength")
                apply_btn = gr.Button("Apply mapper to the image to edit", variant="primary")
                a_progress = gr.HTML()  # its own line: applying no longer overwrites the training's (issue 29)
                a_info = gr.Markdown()
            with gr.Column():
                m_preview = gr.Image(label="Held-out samples: starts above, edits below", type="numpy",
                                     interactive=False, height=IMAGE_HEIGHT)
                with gr.Row():
                    a_before = gr.Image(label="Before", type="numpy", interactive=False, height=IMAGE_HEIGHT)
                    a_after = gr.Image(label="After", type="numpy", interactive=False, height=IMAGE_HEIGHT)
        trained = gr.State(None)

        def on_train(gen, clip_spec, s, trunc, text, *values, flag):
            bar, skip = _Bar(), gr.skip()
            settings = {"seed": s, "truncation": trunc, **dict(zip(MAPPER_FIELDS, values))}

            def progress(item):
                image = shown(item.preview) if item.preview is not None else skip
                return image, bar.running(item), skip, skip, skip, skip

            def result(out):
                sc = out.scores
                path = str(out.save(video="gif")["mapper"])
                info = (f"Mapper for “{out.prompt}”: on {out.settings['num_eval']} held-out samples the CLIP loss "
                        f"went {sc['eval_clip_loss_before']:.3f} → {sc['eval_clip_loss']:.3f} (CLIPScore "
                        f"{sc['clip_score_before']:.1f} → {sc['clip_score']:.1f})"
                        + ("; stopped: the mapper trained so far" if out.stopped else ""))
                line = f"{1000 * out.timings['per_step_s']:.0f} ms/step"
                return shown(out.image), bar.end(out, line), info, out, path, notice_markdown(out.notice)

            yield from drive(train_mapper(gen, clip_spec, text, settings), flag, progress, result)

        def on_apply(gen, clip_spec, st, s, trunc, mapper, upload, strength, flag):
            bar, skip = _Bar(), gr.skip()
            settings = {"seed": s, "truncation": trunc, "strength": strength}

            def result(out):
                sc = out.scores
                info = (f"Mapper edit for “{out.prompt}” at strength {out.settings['strength']:g}: CLIPScore "
                        f"{sc['clip_score_before']:.1f} → {sc['clip_score']:.1f}; "
                        f"{1000 * out.timings['edit_s']:.0f} ms")
                return shown(out.original), shown(out.image), bar.end(out), info, notice_markdown(out.notice)

            yield from drive(apply_mapper(gen, clip_spec, st, mapper, upload, settings), flag,
                             lambda item: (skip, skip, bar.running(item), skip, skip), result)

        def on_strength(gen, clip_spec, st, s, trunc, mapper, upload, strength, flag):
            if mapper is None and not upload:  # nothing to apply yet: stay quiet
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            yield from on_apply(gen, clip_spec, st, s, trunc, mapper, upload, strength, flag=flag)

        train_btn.click(run_handler(on_train), [generator, clip, seed, truncation, m_prompt, *m_controls],
                        [token, m_preview, m_progress, m_info, trained, m_file, notice], api_name="latent_mapper")
        a_inputs = [generator, clip, state, seed, truncation, trained, m_upload, m_strength]
        a_outputs = [token, a_before, a_after, a_progress, a_info, notice]
        apply_btn.click(run_handler(on_apply), a_inputs, a_outputs, api_name="latent_mapper_apply")
        # the strength re-applies on release: an edit is one mapper pass and one generator pass
        m_strength.release(run_handler(on_strength), a_inputs, a_outputs, api_visibility="private",
                           trigger_mode="always_last")
