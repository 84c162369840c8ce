import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.lens import MAX_GALLERY, MAX_LABELS, CLIPLensPipeline, LensConfig, parse_labels
from pipelines.registry import get_task
from studio.media import read_png_metadata
from studio.progress import Progress


@pytest.fixture()
def lens(tiny_scorer):
    return CLIPLensPipeline(tiny_scorer)


def _img(seed=0, size=40):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_parse_labels():
    assert parse_labels("cat, dog\nbird,, cat \n") == ["cat", "dog", "bird"]
    assert parse_labels(["cat", " dog ", "cat"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="`labels`"):
        parse_labels(" , \n ")
    with pytest.raises(ValueError, match=f"at most {MAX_LABELS}"):
        parse_labels([f"label {i}" for i in range(MAX_LABELS + 1)])


@pytest.mark.parametrize("bad", [None, 3, ["cat", 2]])
def test_labels_of_the_wrong_type_are_value_errors(lens, bad):
    with pytest.raises(ValueError, match="`labels` must be text"):
        lens.classify(_img(), bad)


def test_classify_returns_all_labels_sorted_summing_to_one(lens):
    out = lens.classify(_img(), "a cat, a dog, a red circle, a car")
    assert sorted(out.labels) == sorted(["a cat", "a dog", "a red circle", "a car"])
    assert out.probs == sorted(out.probs, reverse=True)
    assert abs(sum(out.probs) - 1.0) < 1e-5
    assert out.templates == "curated"  # "auto" for a real (non-demo) CLIP
    assert out.scores == dict(zip(out.labels, out.probs))
    # The order is the scorer's own ranking of the ensembled prompts.
    p = lens.scorer.rank(torch.from_numpy(np.asarray(_img(), dtype=np.float32) / 255).permute(2, 0, 1)[None],
                         out.labels, "curated")[0]
    assert torch.allclose(p, torch.tensor(out.probs), atol=1e-5)


def test_auto_templates_follow_the_model(lens, demo_scorer):
    assert CLIPLensPipeline(demo_scorer).classify(_img(), "a, b").templates == "shapes"
    assert lens.classify(_img(), "a, b", templates="imagenet").templates == "imagenet"
    with pytest.raises(ValueError, match="`templates` must be one of"):
        lens.classify(_img(), "a, b", templates="fancy")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_classify_accepts_grayscale_rgba_palette(lens, mode):
    out = lens.classify(_img().convert(mode), "a, b")
    assert len(out.labels) == 2


def test_classify_bad_inputs(lens, tmp_path):
    with pytest.raises(ValueError, match="`labels`"):
        lens.classify(_img(), "")
    with pytest.raises(ValueError, match="`image` is missing"):
        lens.classify(None, "cat")
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="`image` could not be read"):
        lens.classify(str(bad), "cat")
    with pytest.raises(ValueError, match="at least 16"):
        lens.classify(Image.new("RGB", (1, 1)), "cat")
    with pytest.raises(ValueError, match="`image` holds NaN"):
        lens.classify(torch.full((3, 32, 32), float("nan")), "cat")
    with pytest.raises(ValueError, match="`image` must be one image"):
        lens.classify(torch.rand(2, 3, 32, 32), "cat")
    with pytest.raises(ValueError, match="unknown setting 'steps'"):
        lens.classify(_img(), "cat", steps=3)


def test_classify_is_one_step_and_saves_the_labels(lens, tmp_path):
    items = list(lens.iter_classify(_img(), "a cat, a dog"))
    assert [type(i) for i in items] == [Progress, type(items[-1])] and items[0].step == items[0].total == 1
    assert isinstance(items[0].preview, Image.Image)
    out = items[-1]
    assert np.array_equal(np.asarray(out.image), np.asarray(_img()))  # the input image, as PIL
    paths = out.save(tmp_path)
    meta = read_png_metadata(paths["png"])
    assert meta["task"] == "lens-classify" and meta["labels"] == out.labels
    assert meta["scores"] == {k: round(v, 4) for k, v in zip(out.labels, out.probs)}
    saved = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert saved["labels"] == out.labels and saved["probs"] == out.probs


def test_search_and_arithmetic_rank_whole_gallery(lens):
    gallery = [_img(i) for i in range(4)]
    out = lens.search(gallery, "a cat")
    assert sorted(out.order) == [0, 1, 2, 3] and out.similarities == sorted(out.similarities, reverse=True)
    assert [np.asarray(im).tolist() for im in out.images] == [np.asarray(gallery[i]).tolist() for i in out.order]
    # The query image itself with a zero-weight edit is its own nearest neighbour.
    same = lens.arithmetic(gallery, gallery[2], minus="dog", plus="cat", weight=0.0)
    assert same.order[0] == 2 and abs(same.similarities[0] - 100.0) < 1e-3
    moved = lens.arithmetic(gallery, gallery[2], minus="dog", plus="cat", weight=1.0)
    assert sorted(moved.order) == [0, 1, 2, 3] and moved.similarities != same.similarities
    with pytest.raises(ValueError, match="`minus` and `plus`"):
        lens.arithmetic(gallery, gallery[0], "", " ")
    with pytest.raises(ValueError, match="`images`"):
        lens.search([], "cat")
    with pytest.raises(ValueError, match="`images`"):
        lens.search(None, "cat")
    with pytest.raises(ValueError, match=f"at most {MAX_GALLERY}"):
        lens.search([gallery[0]] * (MAX_GALLERY + 1), "cat")
    with pytest.raises(ValueError, match="`query`"):
        lens.search(gallery, "  ")


@pytest.mark.parametrize("weight", ["1", None, float("nan"), -0.5, 5.5])
def test_arithmetic_weight_is_checked(lens, weight):
    with pytest.raises(ValueError, match=r"`weight` must be a number in \[0, 5\]"):
        lens.arithmetic([_img(0)], _img(1), "dog", "cat", weight=weight)


def test_arithmetic_bad_texts_and_tensors(lens):
    with pytest.raises(ValueError, match="`minus` must be text"):
        lens.arithmetic([_img(0)], _img(1), 3, "cat")
    with pytest.raises(ValueError, match=r"`images\[1\]` holds NaN"):
        lens.arithmetic([_img(0), torch.full((1, 3, 32, 32), float("nan"))], _img(1), "dog", "cat")
    with pytest.raises(ValueError, match="`query_image` holds NaN"):
        lens.arithmetic([_img(0)], torch.full((1, 3, 32, 32), float("inf")), "dog", "cat")


def test_search_steps_per_image_and_a_stop_ranks_what_was_embedded(lens):
    gallery = [_img(i) for i in range(3)]
    items = list(lens.iter_search(gallery, "a cat"))
    steps = items[:-1]
    assert [p.step for p in steps] == [1, 2, 3] and all(p.total == 3 for p in steps)
    assert [np.asarray(p.preview).tolist() for p in steps] == [np.asarray(im).tolist() for im in gallery]
    full = items[-1]
    assert sorted(p.metrics["similarity"] for p in steps) == sorted(full.similarities)

    gen = lens.iter_search(gallery, "a cat")
    next(gen)
    next(gen)
    stopped = gen.send("stop")
    assert stopped.done and stopped.stopped and stopped.steps_run == 2 and sorted(stopped.order) == [0, 1]
    # the callback stops the drained run the same way
    seen = []
    out = lens.search(gallery, "a cat", callback=lambda step, total, preview: seen.append(step) or False)
    assert seen == [1] and out.stopped and out.order == [0]


def test_ranking_saves_each_image_with_its_rank(lens, tmp_path):
    gallery = [_img(i) for i in range(3)]
    out = lens.arithmetic(gallery, gallery[1], "dog", "cat", weight=0.5)
    assert out.settings == {"minus": "dog", "plus": "cat", "weight": 0.5, "seed": 0}  # no `templates`: not read
    paths = out.save(tmp_path)
    assert {"png0", "png1", "png2", "json"} <= set(paths)
    meta = read_png_metadata(paths["png1"])
    assert meta["task"] == "lens-arithmetic" and meta["rank"] == 2 and meta["gallery_index"] == out.order[1]
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["order"] == out.order


def test_each_registered_task_reads_its_own_config_and_refuses_what_it_would_ignore(lens):
    configs = {name: get_task(name).config for name in ("lens-classify", "lens-search", "lens-arithmetic",
                                                        "lens-image-search")}
    assert len(set(configs.values())) == 4 and all(issubclass(c, LensConfig) for c in configs.values())
    assert {n: list(get_task(n).specs()) for n in configs} == {
        "lens-classify": ["seed", "templates"], "lens-search": ["seed"], "lens-arithmetic": ["seed", "weight"],
        "lens-image-search": ["seed"]}
    assert all(get_task(n).models == ("clip",) for n in configs)
    # issue 23: lens-search accepted `weight` and `templates` and ignored them
    with pytest.raises(ValueError, match="unknown settings 'templates', 'weight' for LensSearchConfig; valid: seed"):
        lens.search([_img(0)], "a cat", weight=2.0, templates="imagenet")
    with pytest.raises(ValueError, match="unknown setting 'templates' for LensArithmeticConfig"):
        lens.arithmetic([_img(0)], _img(1), "dog", "cat", templates="imagenet")
    weight = get_task("lens-arithmetic").specs()["weight"]
    assert (weight.default, weight.lo, weight.hi) == (1.0, 0.0, 5.0) and weight.ui_hi <= weight.hi
    assert get_task("lens-classify").specs()["templates"].choices[0] == "auto"


# ---------------------------------------------------------------------------------------------------- the tab
LENS_TASKS = ("lens-classify", "lens-search", "lens-arithmetic")


def _build_tab(classify=None, search=None, arithmetic=None):
    import gradio as gr

    from studio.ui import lens as ui

    specs = {n: get_task(n).specs() for n in LENS_TASKS}
    with gr.Blocks() as demo:
        ui.build(classify, search, arithmetic, ["tiny-test-vit"], "tiny-test-vit", lambda spec: None, specs,
                 MAX_GALLERY)
    return demo, {f.api_name: f.fn for f in demo.fns.values()}


def test_the_tab_s_controls_come_from_the_config():
    demo, _ = _build_tab()
    found = {}
    for block in demo.blocks.values():
        elem = getattr(block, "elem_id", None) or ""
        if "--" in elem:
            task, name = elem.split("--")
            found[elem] = (block, get_task(task).specs()[name])
    assert set(found) == {"lens-classify--templates", "lens-arithmetic--weight"}
    weight, spec = found["lens-arithmetic--weight"]
    assert (weight.value, weight.minimum, weight.maximum) == (spec.default, spec.ui_lo, spec.ui_hi)
    templates, spec = found["lens-classify--templates"]
    assert templates.value == spec.default and [c[0] for c in templates.choices] == list(spec.choices)


def test_search_on_the_page_streams_and_stop_shows_the_ranking_so_far(lens, tmp_path):
    from studio.ui.common import RUNS

    files = []
    for i in range(3):
        files.append(str(tmp_path / f"{i}.png"))
        _img(i).save(files[-1])
    _, fns = _build_tab(search=lambda spec, f, q, **kw: lens.iter_search(f, q, **kw),
                        arithmetic=lambda spec, f, im, m, p, **kw: lens.iter_arithmetic(f, im, m, p, **kw))

    outs = list(fns["lens_search"]("tiny-test-vit", files, "a cat"))
    assert len(outs) == 4  # a step per image, then the ranking
    token, gallery, progress, _notice, downloads = outs[-1]
    assert len(gallery) == 3 and "done: 3 of 3 images" in progress and any(d.endswith(".json") for d in downloads)
    assert "step 2 / 3" in outs[1][2] and len(outs[1][1]) == 2  # the images embedded so far
    # the uploads' names stay in the captions and the downloads (issue 29: captions were scores, files lens-search-0)
    ranked = [f"{n}.png" for n in json.loads(open(next(d for d in downloads if d.endswith(".json"))).read())["order"]]
    assert [caption.split(" · ")[1] for _, caption in gallery] == ranked
    pngs = sorted(os.path.basename(d) for d in downloads if d.endswith(".png"))
    assert pngs == sorted(f"lens-search-{r}-{name[:-4]}.png" for r, name in enumerate(ranked))

    run = fns["lens_arithmetic"]("tiny-test-vit", files, _img(1), "dog", "cat", 0.5)
    first = next(run)
    assert RUNS.stop(first[0])  # the Stop button's handler, with the run's token
    *_, last = run
    _, gallery, progress, _notice, downloads = last
    assert len(gallery) == 1 and "stopped at step 1 of 3" in progress and downloads
    assert not RUNS.stop(first[0])  # the run has finished: its token is gone


def test_bad_search_input_reaches_the_page_as_a_message(lens):
    import gradio as gr

    _, fns = _build_tab(search=lambda spec, f, q, **kw: lens.iter_search(f, q, **kw))
    with pytest.raises(gr.Error, match="`images` must hold at least one image"):
        list(fns["lens_search"]("tiny-test-vit", [], "a cat"))


def test_sixteen_bit_pngs_are_scaled_and_exif_orientation_applied_once(tmp_path):
    """Issue 17: a 16-bit PNG came out 99.6 % white; EXIF orientation was ignored by our loader."""
    import numpy as np
    from PIL import Image

    from studio.images import load_image

    grey = np.full((32, 32), 32768, np.uint16)  # mid grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "g16.png")
    arr = np.asarray(load_image(tmp_path / "g16.png"))
    assert arr.shape == (32, 32, 3) and abs(int(arr.mean()) - 128) <= 1

    img = Image.new("RGB", (40, 20), "red")  # wide, tagged "rotate 90° clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_without_an_index_the_tab_says_how_to_get_one():
    """Issue 29: the page never hinted that "Search the index" exists without `--index`."""
    import gradio as gr

    demo, _ = _build_tab()
    texts = " ".join(b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str))
    assert "`--index DIR`" in texts and "Search the index" in texts
    assert not any(getattr(b, "label", None) == "Search the index" for b in demo.blocks.values())
