"""`clip-studio run TASK` for every registered task: two inputs × two seeds (or two seeds where the task takes no
per-item input) on the demo CLIP, the demo generator and a tiny diffusers model; files, manifest lines and the
contact sheet. Chained tasks start from an earlier task's files (a mapper, text-to-image latents, a StyleCLIP
latent), which is how a user runs them from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.registry import task_names
from studio.cli import run_main

MODELS = ["--clip", "shapes-clip", "--device", "cpu", "--quiet"]
GAN = ["--generator", "demo-shapes"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two shape photos, two short videos, a tiny diffusers model folder."""
    from t2i_tiny import make_tiny_sd

    from studio.demo.scenes import Appearance, write_shapes_video
    from studio.demo.shapes import make_sample

    root = tmp_path_factory.mktemp("cli-tasks")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(make_sample(i, image_size=48).image).save(photos / f"shape{i}.png")
    videos = root / "videos"
    videos.mkdir()
    for i, colour in enumerate(("red", "blue")):
        write_shapes_video(videos / f"v{i}.mp4", [Appearance(colour, "circle", 1.0, 2.0)], 2.0, fps=5, size=(96, 64))
    make_tiny_sd(root / "tok").save_pretrained(root / "tiny-sd")
    return {"photos": photos, "videos": videos, "sd": root / "tiny-sd", "root": root}


def _sets(**kw) -> list[str]:
    return [x for k, v in kw.items() for x in ("--set", f"{k}={json.dumps(v)}")]


TWO_PROMPTS = ["--prompt", "a red circle", "--prompt", "a blue square"]
T2I = _sets(num_steps=1, guidance_scale=0.0, width=32, height=32, num_images=1)


def _args(name: str, f: dict, out_of) -> list[str]:
    """The command line of each task (its two items); `out_of(task)` runs another task first for chained inputs."""
    photos, videos = str(f["photos"]), str(f["videos"])
    sd = ["--model", str(f["sd"])]
    if name == "clipdraw":
        return TWO_PROMPTS + _sets(num_strokes=4, num_steps=2, canvas_size=32)
    if name == "clipasso":
        return ["--images", photos] + _sets(num_strokes=3, num_steps=2, num_seeds=1, canvas_size=32)
    if name == "vectorize":
        return ["--images", photos] + _sets(num_paths=2, num_steps=2, canvas_size=32)
    if name == "lens-classify":
        return ["--images", photos, "--prompt", "red, blue, green"]
    if name == "lens-search":
        return ["--images", photos] + TWO_PROMPTS
    if name == "lens-image-search":
        return ["--images", photos]
    if name == "lens-arithmetic":
        return ["--images", photos, "--minus", "circle", "--prompt", "square"] + _sets(weight=0.5)
    if name == "lens-detect":
        return ["--images", photos, "--prompt", "a blue square"] + _sets(batch_size=4, threshold=0.0)
    if name == "lens-video":
        return ["--videos", videos, "--prompt", "a red circle"] + _sets(patch_size=48, batch_frames=1, threshold=0.0)
    if name == "lens-index":
        return ["--folder", photos]
    if name == "lens-index-search":
        out_of("lens-index")  # indexes the photos folder in place
        return ["--folder", photos] + TWO_PROMPTS + _sets(top_k=2)
    if name == "styleclip-edit":  # from an inversion's latent file
        latent = out_of("styleclip-invert")[0]["files"]["latent"]
        return GAN + ["--latent-or-image", str(f["root"] / "styleclip-invert" / latent)] + TWO_PROMPTS + _sets(
            num_steps=2)
    if name == "styleclip-global":
        return GAN + ["--neutral", "a circle"] + TWO_PROMPTS + _sets(num_samples=2, use_cache=False, beta=0.0)
    if name == "styleclip-invert":
        return GAN + ["--images", photos] + _sets(num_steps=2)
    if name == "styleclip-relevance":
        return GAN + _sets(num_samples=2, use_cache=False)
    if name == "styleclip-sample":
        return GAN + _sets(truncation=0.5)
    if name == "styleclip-mapper":
        return GAN + TWO_PROMPTS + _sets(num_steps=2, batch_size=2, num_eval=2)
    if name == "styleclip-mapper-apply":
        mapper = out_of("styleclip-mapper")[0]["files"]["mapper"]
        return GAN + ["--mapper", str(f["root"] / "styleclip-mapper" / mapper)] + _sets(strength=0.8)
    if name == "text2image":
        return sd + TWO_PROMPTS + T2I
    if name == "text2image-refine":
        return sd + ["--one-step"] + TWO_PROMPTS + _sets(num_steps=2, width=32, height=32)
    if name == "text2image-img2img":
        return sd + ["--images", photos] + TWO_PROMPTS + _sets(num_steps=2, strength=0.5, guidance_scale=0.0)
    if name == "text2image-inpaint":  # each photo's mask is the file of its name in --masks
        masks = f["root"] / "masks"
        masks.mkdir(exist_ok=True)
        for photo in sorted(f["photos"].glob("*.png")):
            mask = np.zeros((48, 48), np.uint8)
            mask[:, 24:] = 255
            Image.fromarray(mask).save(masks / photo.name)
        return sd + ["--images", photos, "--masks", str(masks)] + TWO_PROMPTS + _sets(num_steps=1, guidance_scale=0.0)
    if name == "text2image-edit":
        latents = out_of("text2image")[0]["files"]["latents"]
        return sd + ["--latents", str(f["root"] / "text2image" / latents), "--source-prompt", "a red circle",
                     "--prompt", "a blue circle", "--prompt", "a green circle"] + _sets(num_steps=2)
    raise KeyError(name)


TASKS = ["clipdraw", "clipasso", "lens-arithmetic", "lens-classify", "lens-detect", "lens-image-search", "lens-index",
         "lens-index-search", "lens-search", "lens-video", "styleclip-edit", "styleclip-global", "styleclip-invert",
         "styleclip-mapper", "styleclip-mapper-apply", "styleclip-relevance", "styleclip-sample", "text2image",
         "text2image-edit", "text2image-img2img", "text2image-inpaint", "text2image-refine", "vectorize"]


def test_every_registered_task_has_a_command_line_case():
    assert sorted(TASKS) == task_names()


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", TASKS)
def test_run_every_task_over_two_items_and_two_seeds(name, files, monkeypatch):
    monkeypatch.setenv("STUDIO_CACHE", str(files["root"] / "cache"))
    done: dict[str, list[dict]] = {}

    def out_of(task: str) -> list[dict]:
        """Run `task` first (once per module) and return its manifest lines."""
        out = files["root"] / task
        if not (out / "manifest.jsonl").is_file():
            assert run_main([task, *_args(task, files, out_of), "--seeds", "0", "--out", str(out), *MODELS]) == 0
        done[task] = _manifest(out)
        return done[task]

    args = _args(name, files, out_of)
    out = files["root"] / f"{name}-2x2"
    assert run_main([name, *args, "--seeds", "0-1", "--out", str(out), *MODELS]) == 0
    lines = _manifest(out)
    inputs = {json.dumps(ln["inputs"], sort_keys=True) for ln in lines}
    n_inputs = {"lens-index": 1, "styleclip-relevance": 1, "styleclip-mapper-apply": 1, "styleclip-sample": 1,
                "text2image-img2img": 4, "text2image-inpaint": 4}.get(name, 2)  # image tasks: 2 photos x 2 prompts
    assert len(lines) == 2 * n_inputs and len(inputs) == n_inputs  # inputs × seeds, each once
    assert sorted(ln["seed"] for ln in lines) == sorted([0, 1] * n_inputs)
    for ln in lines:
        assert ln["error"] is None and ln["files"], ln
        assert all((out / p).is_file() and (out / p).stat().st_size > 0 for p in ln["files"].values())
        assert ln["task"] == name and ln["models"]["clip"] == "shapes-clip" and ln["studio_version"]
    assert (out / "index.html").is_file() and (out / "grid.png").is_file()
    html = (out / "index.html").read_text()
    pngs = [p for ln in lines for p in ln["files"].values() if p.endswith(".png")]
    assert pngs and any(p in html for p in pngs)
    if name == "vectorize":  # the contact sheet shows each picture beside its SVG
        assert all(ln["files"]["sheet"] in html for ln in lines)
        with Image.open(out / lines[0]["files"]["sheet"]) as sheet:
            assert sheet.size[0] > 2 * sheet.size[1]
    # a rerun trusts what is there
    assert run_main([name, *args, "--seeds", "0-1", "--out", str(out), *MODELS]) == 0
    assert [ln["key"] for ln in _manifest(out)] == [ln["key"] for ln in lines]


def test_state_files_are_read_without_pickle_and_bad_ones_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    from studio.batch import load_state

    save_file({"latents": torch.ones(1, 4, 2, 2)}, str(tmp_path / "z.safetensors"))
    assert torch.equal(load_state(str(tmp_path / "z.safetensors")), torch.ones(1, 4, 2, 2))
    np.save(tmp_path / "w.npy", np.zeros((1, 8), dtype=np.float32))
    assert load_state(str(tmp_path / "w.npy")).shape == (1, 8)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        load_state(str(tmp_path / "obj.npy"))
    save_file({"a": torch.ones(1), "b": torch.ones(1)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match=r"must hold one tensor, got \['a', 'b'\]"):
        load_state(str(tmp_path / "two.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_state(str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="must be .safetensors, .npy or an image"):
        load_state(str(tmp_path / "x.pt"))
    assert load_state(str(tmp_path / "photo.PNG")) == str(tmp_path / "photo.PNG")


def test_a_required_secondary_input_is_asked_for_by_its_flag(tmp_path, capsys):
    assert run_main(["styleclip-global", "--prompt", "a red circle", "--out", str(tmp_path), *MODELS, *GAN]) == 2
    err = capsys.readouterr().err
    assert "needs `--neutral`" in err and err.count("\n") == 1
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a red circle", "neutral": "a circle"}\n{"prompt": "a blue circle"}\n')
    from pipelines.registry import get_task
    from studio.batch import plan, read_prompts

    items = plan(get_task("styleclip-global"), prompts=read_prompts(lines), images=None, seeds=[0], settings={},
                 models={})
    assert items[0].error is None and items[0].inputs == {"target": "a red circle", "neutral": "a circle"}
    assert "`neutral` is required" in items[1].error


def test_a_folder_input_reruns_when_its_images_change(tmp_path):
    """`lens-index --folder DIR` rerun after adding an image must index it, not skip the item as done."""
    from pipelines.registry import get_task
    from studio.batch import plan

    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")

    def key() -> str:
        return plan(get_task("lens-index"), prompts=None, images=None, seeds=[0], settings={}, models={},
                    fixed={"folder": str(folder)})[0].key

    first = key()
    (folder / ".clip-studio-index").mkdir()  # the index the run writes inside the folder does not count
    (folder / ".clip-studio-index" / "t.lance").write_bytes(b"x")
    assert key() == first
    Image.new("RGB", (8, 8), "blue").save(folder / "b.png")
    assert key() != first


def test_help_shows_the_model_familys_defaults(capsys, monkeypatch):
    """Issue 23: `--model <an SD 1.5 folder> --help` printed SD-Turbo's 1 step while the run used 25."""
    import re

    monkeypatch.delenv("STUDIO_T2I_MODEL", raising=False)

    def default_steps(*model: str) -> int:
        with pytest.raises(SystemExit) as done:
            run_main(["text2image", *model, "--help"])
        assert done.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        return int(re.search(r"--num-steps INT .*?\(default (\d+);", help_text).group(1))

    assert default_steps() == 1  # the default model, SD-Turbo
    assert default_steps("--model", "/models/stable-diffusion-v1-5") == 25
    assert default_steps("--model", "/models/sd-turbo") == 1


def test_inpaint_masks_are_matched_by_name_and_keep_the_rest_of_each_photo(files, tmp_path, monkeypatch):
    """`--masks DIR`: each photo gets the mask of its own file name (a missing one is named before any work); every
    pixel outside it is the photo's own in the result."""
    monkeypatch.setenv("STUDIO_CACHE", str(files["root"] / "cache"))
    masks = tmp_path / "masks"
    masks.mkdir()
    photos = sorted(files["photos"].glob("*.png"))
    for k, photo in enumerate(photos):  # a different half per photo: the left for the first, the right for the next
        mask = np.zeros((48, 48), np.uint8)
        mask[:, (0 if k == 0 else 24):(24 if k == 0 else 48)] = 255
        Image.fromarray(mask).save(masks / photo.name)
    args = ["text2image-inpaint", "--model", str(files["sd"]), "--images", str(files["photos"]), "--prompt", "a blue "
            "square", *_sets(num_steps=1, guidance_scale=0.0, mask_blur=0), "--seeds", "0", *MODELS]
    assert run_main([*args, "--masks", str(masks), "--out", str(tmp_path / "out")]) == 0
    lines = sorted(_manifest(tmp_path / "out"), key=lambda ln: ln["inputs"]["image"])
    for k, (line, photo) in enumerate(zip(lines, photos, strict=True)):
        assert line["inputs"]["mask"] == str(masks / photo.name)
        png = next(p for p in line["files"].values() if p.endswith(".png"))
        result = np.asarray(Image.open(tmp_path / "out" / png).convert("RGB"))
        source = np.asarray(Image.open(photo).convert("RGB"))
        kept = slice(24, 48) if k == 0 else slice(0, 24)
        assert np.array_equal(result[:, kept], source[:, kept])
    (masks / photos[1].name).unlink()
    assert run_main([*args, "--masks", str(masks), "--out", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2" / "manifest.jsonl").exists()
