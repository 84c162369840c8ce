"""The Text to Image tab: handlers driven with the tiny pipeline, the one Stop, controls from the configs, PNG restore,
errors as gr.Error, no torch import."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image
from t2i_tiny import make_tiny_sd

from pipelines.text2image import Text2ImagePipeline
from pipelines.text2image_models import SCHEDULERS, ModelPreset
from studio.media import read_png_metadata, save_png
from studio.tasks import SEED_MAX, specs
from studio.ui.common import RUNS, run_handler
from studio.ui.text2image import (
    EDIT,
    GENERATE,
    IMG2IMG,
    INPAINT,
    REFINE,
    Handlers,
    build,
    controls_from_metadata,
    restore_keys,
)

PROMPT = "a red circle"
GEN_VALUES = dict(num_steps=1, guidance_scale=0.0, width=32, height=32, num_images=3, batch_size=2, seed=40,
                  scheduler="default", rerank=True, negative_prompts="")
# output positions of the generate handler (without the run token) and of refine/edit
GALLERY, FILES, INFO, SEED, RECORDS, HISTORY_GALLERY, HISTORY, PROGRESS, PREVIEW = range(9)
R_PREVIEW, R_COMPARE, R_INFO, R_FILES, R_HISTORY_GALLERY, R_HISTORY, R_PROGRESS = range(7)


@pytest.fixture(scope="module")
def t2i(tmp_path_factory, tiny_scorer):
    pipe = make_tiny_sd(tmp_path_factory.mktemp("tiny_sd_tokenizer"))
    return Text2ImagePipeline(pipe, tiny_scorer, model_name="tiny-sd",
                              preset=ModelPreset(num_steps=1, guidance_scale=0.0, size=32, one_step=True))


@pytest.fixture(scope="module")
def task_specs(t2i):
    return {GENERATE: specs(t2i.config), REFINE: specs(t2i.refine_config), EDIT: specs(t2i.edit_config)}


@pytest.fixture(scope="module")
def handlers(t2i, task_specs):
    return Handlers(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, task_specs)


def gen_args(handlers, history=(), random_seed=False, prompt=PROMPT, **overrides) -> list:
    """The generate handler's inputs: prompt, random seed, history, then the controls in the config's order."""
    values = {**GEN_VALUES, **overrides}
    return [prompt, random_seed, list(history)] + [values[n] for n in handlers.names[GENERATE]]


def run_generate(handlers, history=(), **overrides):
    return list(handlers.generate(*gen_args(handlers, history, **overrides), flag=threading.Event()))


def test_build_lays_out_the_tab_with_controls_from_the_configs(t2i, task_specs):
    demo = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, specs=task_specs, model="tiny-sd",
                 clip_model="tiny-test-vit", one_step=True)
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(b, "value", None) for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Generate", "Stop", "Refine selected", "Edit selected"} <= labels
    built = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None) and "--" in b.elem_id}
    expected = {f"{task}--{name}" for task, s in task_specs.items() for name, spec in s.items() if spec.control}
    assert set(built) == expected
    for elem_id, block in built.items():
        task, name = elem_id.split("--")
        spec = task_specs[task][name]
        assert block.value == spec.default, elem_id
        if isinstance(block, gr.Slider):
            assert (block.minimum, block.maximum) == (spec.ui_lo, spec.ui_hi), elem_id
        if isinstance(block, gr.Dropdown):
            assert [c[1] for c in block.choices] == list(spec.choices), elem_id
    assert all(not dep.get("cancels") for dep in demo.config["dependencies"])  # the one Stop, not cancels=
    with gr.Blocks() as outer:  # inside the app's Blocks it adds its tab there instead
        with gr.Tabs():
            assert build(t2i.iter_generate, specs=task_specs) is None
    assert any(isinstance(b, gr.Tab) and b.label == "Text to Image" for b in outer.blocks.values())


def test_generate_streams_then_shows_sorted_results_and_history(handlers):
    steps = run_generate(handlers)
    assert len(steps) == 3  # one step per batch of the one-step model, then the result
    assert "step 1 / 2" in steps[0][PROGRESS] and "images 1–2 of 3" in steps[0][PROGRESS]
    assert "image 3 of 3" in steps[1][PROGRESS] and steps[0][PREVIEW].size == (32, 32)
    out = steps[-1]
    assert out[SEED] == 40 and len(out[GALLERY]) == len(out[FILES]) == len(out[RECORDS]) == 3
    scores = [r["meta"]["scores"]["clip_score"] for r in out[RECORDS]]
    assert scores == sorted(scores, reverse=True) and "sorted by CLIP score" in out[INFO]
    assert "done: 2 of 2 steps" in out[PROGRESS]
    for path, record in zip(out[FILES], out[RECORDS]):
        assert read_png_metadata(path) == record["meta"]
    again = run_generate(handlers, history=out[HISTORY], seed=1, num_images=1)[-1]
    assert len(again[HISTORY]) == 4 and again[HISTORY][0]["meta"]["seed"] == 1  # newest first


def test_multistep_generate_shows_the_step_within_the_batch(handlers):
    out = run_generate(handlers, num_steps=3, num_images=3, batch_size=2, rerank=False)
    html = [o[PROGRESS] for o in out[:-1]]
    assert len(html) == 6 and all(f"step {k} / 6" in t for k, t in enumerate(html, 1))
    texts = [t.split("· ", 1)[1].split("<")[0] for t in html]
    expected = [f"images 1–2 of 3 · step {s}/3" for s in (1, 2, 3)] + [f"image 3 of 3 · step {s}/3" for s in (1, 2, 3)]
    assert all(t.startswith(e) for t, e in zip(texts, expected, strict=True))
    assert [i for i, t in enumerate(texts) if "best CLIP" in t] == [2, 5]  # a batch's last step: its images scored
    assert [i for i, o in enumerate(out[:-1]) if o[PREVIEW] != gr.skip()] == [2, 5]
    assert len(out[-1][RECORDS]) == 3 and "stopped" not in out[-1][INFO]


@pytest.fixture
def unet_calls(t2i):
    calls = []
    handle = t2i.pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


def no_worker() -> bool:
    return not any(t.name == "studio-task" for t in threading.enumerate())


def test_stop_keeps_the_finished_images_and_shows_them(handlers, unet_calls):
    flag = threading.Event()
    gen = handlers.generate(*gen_args(handlers, num_steps=3, num_images=2, batch_size=1, rerank=False), flag=flag)
    seen = [next(gen)]
    while "step 4 / 6" not in seen[-1][PROGRESS]:  # step 1 of the second batch
        seen.append(next(gen))
    flag.set()  # what the Stop button does
    rest = list(gen)
    out = rest[-1]
    assert len(out[RECORDS]) == 1 and out[RECORDS][0]["meta"]["seed"] == 40 and "stopped early" in out[INFO]
    assert "stopped at step" in out[PROGRESS] and Path(out[FILES][0]).is_file()
    assert 4 <= len(unet_calls) <= 6 and no_worker()  # the second batch ended within a step or two


def test_stop_before_any_image_says_so(handlers, unet_calls):
    flag = threading.Event()
    gen = handlers.generate(*gen_args(handlers, num_steps=8, num_images=1), flag=flag)
    assert "step 1 / 8" in next(gen)[PROGRESS]
    flag.set()
    out = list(gen)[-1]
    assert out[INFO] == "Stopped before the first image was finished" and "stopped at step 1 of 8" in out[PROGRESS]
    assert 1 <= len(unet_calls) <= 3 and no_worker()


def test_closing_the_handler_stops_the_diffusers_call_within_the_batch(handlers, unet_calls):
    """What happens when the page goes away: the handler's generator is closed at its next yield."""
    gen = handlers.generate(*gen_args(handlers, num_steps=8, num_images=1), flag=threading.Event())
    assert "step 1 / 8" in next(gen)[PROGRESS]
    gen.close()
    assert 1 <= len(unet_calls) <= 3 and no_worker()  # at most two steps after the one shown, not all eight


def test_the_one_stop_reaches_the_run_through_its_token(handlers, unet_calls):
    handler = run_handler(handlers.generate)
    gen = handler(*gen_args(handlers, num_steps=8, num_images=1))
    token, *first = next(gen)
    assert isinstance(token, str) and "step 1 / 8" in first[PROGRESS]
    assert RUNS.stop(token)
    token_again, *out = list(gen)[-1]
    assert token_again == token and "stopped at step" in out[PROGRESS]
    assert not RUNS.stop(token) and len(unet_calls) <= 3  # the run is over and its token gone


def test_random_seed_is_reported_back(handlers):
    seeds = [run_generate(handlers, random_seed=True, num_images=1)[-1][SEED] for _ in range(2)]
    assert all(isinstance(s, int) and 0 <= s <= SEED_MAX for s in seeds) and seeds[0] != seeds[1]


def restored(handlers, path) -> tuple[dict, str]:
    updates = handlers.restore(path)
    return dict(zip(restore_keys(handlers.specs), updates[:-1])), updates[-1]


def test_uploaded_png_restores_the_controls(handlers):
    records = run_generate(handlers, seed=77, num_images=2, rerank=False)[-1][RECORDS]
    values, info = restored(handlers, records[1]["path"])
    g = {name: values[(GENERATE, name)] for task, name in values if task == GENERATE}
    assert g["prompt"] == PROMPT and g["negative_prompts"] == "" and g["seed"] == 78
    assert values[("ui", "random_seed")] is False and g["num_images"] == 1  # that image alone
    assert (g["num_steps"], g["guidance_scale"], g["width"], g["height"]) == (1, 0.0, 32, 32)
    assert g["scheduler"] == "default" and "tiny-sd" in info
    assert all(values[(REFINE, n)] == gr.skip() for n in handlers.names[REFINE])  # a generation sets no refine


def test_a_non_default_scheduler_is_restored(handlers):
    records = run_generate(handlers, seed=3, num_images=1, num_steps=2, scheduler="euler_a")[-1][RECORDS]
    values, _ = restored(handlers, records[0]["path"])
    assert values[(GENERATE, "scheduler")] == "euler_a" and values[(GENERATE, "num_steps")] == 2


def test_refine_and_edit_pngs_restore_their_own_controls(handlers):
    records = run_generate(handlers, seed=9, num_images=1)[-1][RECORDS]
    refined = list(handlers.refine(records, 0, [], 2, 0.02, flag=threading.Event()))[-1]
    values, _ = restored(handlers, refined[R_HISTORY][0]["path"])
    assert values[(GENERATE, "prompt")] == PROMPT and values[(GENERATE, "seed")] == 9
    assert values[(GENERATE, "width")] == 32 and values[(REFINE, "num_steps")] == 2
    assert values[(REFINE, "reg_weight")] == 0.02 and values[(GENERATE, "num_steps")] == gr.skip()
    edited = list(handlers.edit(records, 0, "a blue square", [], 0.5, 2.0, 2, flag=threading.Event()))[-1]
    values, _ = restored(handlers, edited[R_HISTORY][0]["path"])
    assert values[(GENERATE, "prompt")] == PROMPT and values[(EDIT, "edit_prompt")] == "a blue square"
    assert (values[(EDIT, "strength")], values[(EDIT, "proximity")], values[(EDIT, "num_steps")]) == (0.5, 2.0, 2)


def test_png_from_studio_0_1_restores_under_the_new_names(handlers, tmp_path):
    old = {"tool": "text2image", "prompt": PROMPT, "negative_prompt": "dark", "seed": 5, "steps": 3,
           "guidance_scale": 2.0, "width": 32, "height": 48, "scheduler": "ddim", "model": "old", "clip_score": 30.1}
    path = save_png(Image.new("RGB", (32, 48)), tmp_path / "old.png", old)
    values, info = restored(handlers, path)
    assert values[(GENERATE, "negative_prompts")] == "dark" and values[(GENERATE, "num_steps")] == 3
    assert values[(GENERATE, "scheduler")] == "ddim" and values[(GENERATE, "height")] == 48 and "old" in info


def test_png_without_settings_is_refused_and_bad_values_are_named(handlers, task_specs, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no Text to Image settings"):
        controls_from_metadata(read_png_metadata(tmp_path / "plain.png"), task_specs)
    with pytest.raises(gr.Error):
        handlers.restore(str(tmp_path / "plain.png"))
    values, skipped = controls_from_metadata({"task": "text2image", "prompt": PROMPT, "scheduler": "plms",
                                              "seed": 4}, task_specs)
    assert values[(GENERATE, "seed")] == 4 and (GENERATE, "scheduler") not in values
    assert len(skipped) == 1 and "scheduler" in skipped[0] and "'plms'" in skipped[0]


def test_refine_and_edit_stream_previews_and_compare(handlers):
    records = run_generate(handlers, seed=9, num_images=2)[-1][RECORDS]
    assert handlers.names[REFINE] == ["num_steps", "reg_weight"]
    out = list(handlers.refine(records, 1, [], 2, 0.01, flag=threading.Event()))
    assert len(out) == 3 and out[0][R_PREVIEW] is not None and "step 1 / 2" in out[0][R_PROGRESS]
    before, after = out[-1][R_COMPARE]
    history = out[-1][R_HISTORY]
    assert before.size == after.size == (32, 32) and "→" in out[-1][R_INFO]
    assert history[0]["meta"]["task"] == "text2image-refine"
    assert history[0]["meta"]["seed"] == records[1]["meta"]["seed"]
    assert {Path(f).suffix for f in out[-1][R_FILES]} == {".png", ".mp4"}
    assert handlers.names[EDIT] == ["strength", "proximity", "num_steps"]
    edited = list(handlers.edit(records, 0, "a blue square", history, 1.0, 1.0, 2, flag=threading.Event()))
    before, after = edited[-1][R_COMPARE]
    history = edited[-1][R_HISTORY]
    assert "Directional CLIP" in edited[-1][R_INFO] and len(history) == 2
    assert history[0]["meta"]["edit_prompt"] == "a blue square" and history[0]["prompt"] == "a blue square"
    with pytest.raises(gr.Error, match="seed of a generated"):  # an edit has no seed to refine from
        list(handlers.refine(history, 0, [], 2, 0.01, flag=threading.Event()))


def test_stopped_refine_shows_the_best_iterate_with_its_downloads(handlers):
    records = run_generate(handlers, seed=9, num_images=1)[-1][RECORDS]
    flag = threading.Event()
    gen = handlers.refine(records, 0, [], 10, 0.01, flag=flag)
    next(gen)
    flag.set()
    out = list(gen)[-1]
    assert "stopped early" in out[R_INFO] and "stopped at step" in out[R_PROGRESS]
    assert out[R_HISTORY][0]["meta"]["scores"]["clip_score"] >= out[R_HISTORY][0]["meta"]["scores"][
        "clip_score_before"] and all(Path(f).is_file() for f in out[R_FILES])


def test_errors_become_gr_error(handlers, task_specs):
    handler = run_handler(handlers.generate)
    with pytest.raises(gr.Error, match="`prompt`"):
        list(handler(*gen_args(handlers, prompt="")))
    with pytest.raises(gr.Error, match="`width`"):
        list(handler(*gen_args(handlers, width=36)))
    with pytest.raises(gr.Error, match="Generate an image first"):
        list(run_handler(handlers.refine)([], 0, [], 2, 0.01))
    missing = Handlers(None, None, None, task_specs, load_error="model 'x' not available: tried ...")
    with pytest.raises(gr.Error, match="not available") as err:
        list(run_handler(missing.generate)(*gen_args(handlers)))
    assert err.value.duration is None  # a setup problem: it stays on the page until dismissed
    assert RUNS.active() == 0


def test_the_scheduler_choices_are_the_tables(task_specs):
    assert task_specs[GENERATE]["scheduler"].choices == tuple(SCHEDULERS)


def test_negative_prompts_without_guidance_are_refused_with_the_pipelines_message(handlers, t2i):
    """Issue 23: the tab emptied the negative prompts where the pipeline would refuse them; now it says so."""
    with pytest.raises(ValueError) as direct:
        t2i(PROMPT, negative_prompts="blurry", guidance_scale=0.0, num_images=1)
    with pytest.raises(gr.Error) as err:
        list(run_handler(handlers.generate)(*gen_args(handlers, negative_prompts="blurry", guidance_scale=0.0)))
    from studio.ui.common import page_text  # the page escapes its messages' HTML

    assert page_text(str(direct.value)) in err.value.message and "`negative_prompts`" in err.value.message
    assert RUNS.active() == 0


# ---- start from your picture (issue 24) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def picture_handlers(t2i, task_specs):
    from pipelines.text2image_img2img import Text2ImageImg2ImgPipeline
    from pipelines.text2image_inpaint import Text2ImageInpaintPipeline

    i2i, inpaint = Text2ImageImg2ImgPipeline.from_pipe(t2i), Text2ImageInpaintPipeline.from_pipe(t2i)
    all_specs = {**task_specs, IMG2IMG: specs(i2i.config), INPAINT: specs(inpaint.config)}
    return Handlers(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, all_specs, img2img=i2i.iter_img2img,
                    inpaint=inpaint.iter_inpaint)


@pytest.fixture()
def painted(tmp_path):
    """An ImageEditor value as Gradio sends it (type="filepath"): the picture, and a layer with the right half
    painted over with the brush."""
    import numpy as np

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "background.png")
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (16, 0, 32, 32))
    layer.save(tmp_path / "layer.png")
    return {"background": str(tmp_path / "background.png"), "layers": [str(tmp_path / "layer.png")],
            "composite": str(tmp_path / "background.png")}


def picture_values(handlers, task, **overrides) -> list:
    values = {**{n: handlers.specs[task][n].default for n in handlers.names[task]}, **overrides}
    return [values[n] for n in handlers.names[task]]


def test_inpaint_from_the_painted_layer_keeps_every_other_pixel_and_can_be_refined(picture_handlers, painted):
    import numpy as np

    out = list(picture_handlers.inpaint(painted, None, PROMPT, [], *picture_values(
        picture_handlers, INPAINT, num_images=2, seed=4), flag=threading.Event()))[-1]
    gallery, records = out[GALLERY], out[RECORDS]
    assert len(gallery) == 2 and [r["meta"]["seed"] for r in records] == [4, 5] and out[SEED] == 4
    source = np.asarray(Image.open(painted["background"]).convert("RGB"), dtype=np.int16)
    for record in records:
        result = np.asarray(Image.open(record["path"]).convert("RGB"), dtype=np.int16)
        assert np.array_equal(result[:, :16], source[:, :16]) and not np.array_equal(result[:, 16:], source[:, 16:])
        assert record["meta"]["task"] == INPAINT and read_png_metadata(record["path"])["mask_blur"] == 4
    # an inpainted result is refined from its picture (there is no seed that makes it)
    refined = list(picture_handlers.refine(records, 1, [], 2, 0.01, flag=threading.Event()))[-1]
    assert "CLIP score" in refined[R_INFO] and refined[R_COMPARE][1].size == (32, 32)
    # ... and edited from its picture (its VAE encoding)
    edited = list(picture_handlers.edit(records, 0, "a blue circle", [], 1.0, 1.0, 2, flag=threading.Event()))[-1]
    assert "Directional CLIP" in edited[R_INFO] and edited[R_COMPARE][0].size == (32, 32)
    # its PNG restores the inpaint controls
    keys = restore_keys(picture_handlers.specs)
    restored = dict(zip(keys, picture_handlers.restore(records[1]["path"])[:-1]))
    assert restored[(GENERATE, "prompt")] == PROMPT and restored[(INPAINT, "seed")] == 5
    assert restored[(INPAINT, "mask_blur")] == 4


def test_img2img_from_the_editor_and_its_errors(picture_handlers, painted):
    out = list(picture_handlers.img2img(painted, PROMPT, [], *picture_values(picture_handlers, IMG2IMG, strength=0.0),
                                        flag=threading.Event()))[-1]
    assert len(out[GALLERY]) == 1 and out[RECORDS][0]["meta"]["task"] == IMG2IMG
    with pytest.raises(gr.Error, match="Upload a picture first"):
        list(run_handler(picture_handlers.img2img)({"background": None, "layers": []}, PROMPT, [],
                                                   *picture_values(picture_handlers, IMG2IMG)))
    nothing_painted = {**painted, "layers": []}
    with pytest.raises(gr.Error, match="`mask` is missing"):
        list(run_handler(picture_handlers.inpaint)(nothing_painted, None, PROMPT, [],
                                                   *picture_values(picture_handlers, INPAINT)))
    with pytest.raises(gr.Error, match=r"`strength` must be a number in \[0, 1\]"):
        list(run_handler(picture_handlers.img2img)(painted, PROMPT, [],
                                                   *picture_values(picture_handlers, IMG2IMG, strength=1.5)))
    assert RUNS.active() == 0


def test_the_picture_section_is_built_only_with_its_tasks(t2i, picture_handlers):
    demo = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, specs=picture_handlers.specs,
                 img2img=picture_handlers.img2img_fn, inpaint=picture_handlers.inpaint_fn)
    assert any(isinstance(b, gr.ImageEditor) for b in demo.blocks.values())
    assert {"/t2i_img2img", "/t2i_inpaint"} <= {f"/{d.api_name}" for d in demo.fns.values()}
    plain = build(t2i.iter_generate, t2i.iter_refine, t2i.iter_edit, specs=picture_handlers.specs)
    assert not any(isinstance(b, gr.ImageEditor) for b in plain.blocks.values())
