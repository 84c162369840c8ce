"""`clip-studio run TASK`: items × seeds, manifest and contact sheet, bad items, resuming, SIGINT, accelerate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import run_main

FAST = ["--clip", "shapes-clip", "--device", "cpu", "--num-strokes", "4", "--num-steps", "2", "--canvas-size", "32",
        "--quiet"]


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def run(*args) -> int:
    return run_main([str(a) for a in args])


@pytest.fixture
def prompts(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text('a red circle\n{"prompt": "   "}\n{"prompt": "a blue square", "num_steps": 3}\n')
    return f


def test_clipdraw_items_times_seeds_with_a_bad_item_resume_and_force(prompts, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("clipdraw", "--prompts", prompts, "--seeds", "0-1", "--out", out, *FAST) == 1  # one item failed
    lines = manifest(out)
    assert [ln["folder"][:4] for ln in lines] == ["0000", "0001", "0002", "0003", "0004", "0005"]
    bad = [ln for ln in lines if ln["error"]]
    assert len(bad) == 2 and all("`prompt`" in ln["error"] for ln in bad)  # the blank prompt, both seeds
    good = [ln for ln in lines if not ln["error"]]
    assert [ln["seed"] for ln in good] == [0, 1, 0, 1]
    assert good[2]["settings"]["num_steps"] == 3 and good[0]["settings"]["num_steps"] == 2  # per-item settings
    for ln in good:
        assert {"png", "svg", "video"} <= set(ln["files"]) and all((out / f).is_file() for f in ln["files"].values())
        assert ln["models"] == {"clip": "shapes-clip"} and ln["studio_version"] and "clip_score" in ln["scores"]
    assert (out / "index.html").is_file() and Image.open(out / "grid.png").size[0] > 0
    page = (out / "index.html").read_text()
    assert "a blue square" in page and "Failed" in page
    assert "4 done, 0 skipped, 2 failed" in capsys.readouterr().err

    stamp = (out / good[0]["files"]["svg"]).stat().st_mtime_ns
    assert run("clipdraw", "--prompts", prompts, "--seeds", "0-1", "--out", out, *FAST) == 1
    assert "0 done, 4 skipped, 2 failed" in capsys.readouterr().err  # done items skipped, bad ones retried
    assert (out / good[0]["files"]["svg"]).stat().st_mtime_ns == stamp

    # a changed setting reruns only the items it changes: num_steps=3 is what the third prompt already asked for
    assert run("clipdraw", "--prompts", prompts, "--seeds", "0-1", "--out", out, *FAST, "--set", "num_steps=3") == 1
    assert "2 done, 2 skipped, 2 failed" in capsys.readouterr().err
    assert run("clipdraw", "--prompt", "a red circle", "--seeds", "0", "--out", out / "f", *FAST) == 0
    assert run("clipdraw", "--prompt", "a red circle", "--seeds", "0", "--out", out / "f", *FAST, "--force") == 0
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out


def test_clipasso_over_a_folder_of_images(tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (40, 40), colour).save(pics / f"p{i}.png")
    (pics / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = run("clipasso", "--images", pics, "--seeds", "3,4", "--out", out, "--clip", "shapes-clip", "--device",
               "cpu", "--num-strokes", "3", "--num-steps", "2", "--num-seeds", "1", "--set", "canvas_size=32",
               "--quiet")
    assert code == 1
    lines = manifest(out)
    assert len(lines) == 6 and sum(ln["error"] is not None for ln in lines) == 2
    assert all("`image`" in ln["error"] for ln in lines if ln["error"])
    assert {ln["inputs"]["image"].rsplit("/", 1)[-1] for ln in lines if not ln["error"]} == {"p0.png", "p1.png"}


@pytest.mark.parametrize("argv, message", [
    (["nope"], "unknown task 'nope'; valid tasks:"),
    (["clipdraw", "--out", "x", "--seeds", "5-2"], "`--seeds`"),
    (["clipdraw", "--out", "x", "--prompt", "a", "--set", "bogus=1"], "'bogus' is not a setting"),
    (["clipdraw", "--out", "x", "--prompt", "a", "--num-steps", "0"], "`num_steps` must be an integer"),
    (["clipdraw", "--out", "x"], "needs `--prompts FILE`"),
    (["clipasso", "--out", "x", "--images", "nosuchdir"], "`--images` 'nosuchdir' does not exist"),
    (["lens-video", "--out", "x", "--prompt", "a", "--videos", "nosuch.mp4"], "`--videos` 'nosuch.mp4' does not exist"),
])
def test_bad_command_lines_get_one_line_and_a_non_zero_exit(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_mistyped_command_gets_did_you_mean_and_help_lists_the_commands(capsys):
    from studio.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serach", "a cat"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "unknown command 'serach' (did you mean 'search'?)" in err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(f"\n  {word} " in out for word in ("run TASK", "index DIR", "search QUERY", "serve"))


def test_on_the_cpu_unset_settings_start_where_the_page_starts(tmp_path, capsys):
    from pipelines.registry import get_task

    spec = get_task("clipdraw").specs()["num_strokes"]
    assert (spec.default, spec.cpu_default) == (256, 64)
    out = tmp_path / "o"
    assert run("clipdraw", "--out", out, "--prompt", "a red circle", "--clip", "shapes-clip", "--device", "cpu",
               "--num-steps", "1", "--canvas-size", "32", "--quiet") == 0
    assert manifest(out)[0]["settings"]["num_strokes"] == 64  # not the paper's 256
    err = capsys.readouterr().err
    assert "on the CPU the settings start smaller, as on the page: --num-strokes 64" in err
    assert "--num-steps 300" not in err  # given on the command line: kept as given


def _cli(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    return subprocess.Popen([sys.executable, "-m", "studio", "run", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _comparable(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in ln.items() if k != "timings"} for ln in lines]


@pytest.mark.slow
def test_sigint_then_rerun_gives_the_uninterrupted_manifest(tmp_path):
    args = ["clipdraw", "--prompt", "a red circle", "--prompt", "a blue square", "--seeds", "0-2", *FAST]
    whole = tmp_path / "whole"
    proc = _cli(*args, "--out", whole)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()

    cut = tmp_path / "cut"
    proc = _cli(*args, "--out", cut)
    shard = cut / "manifest.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not shard.is_file() or not shard.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130, proc.stderr.read()
    partial = manifest(cut)
    assert 1 <= len(partial) < 6 and not list(cut.glob(".partial-*"))
    proc = _cli(*args, "--out", cut)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert _comparable(manifest(cut)) == _comparable(manifest(whole))


@pytest.mark.slow
def test_accelerate_two_processes_cover_every_item_once_with_identical_files(tmp_path):
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("accelerate's launcher is not installed")
    args = ["clipdraw", "--prompt", "a red circle", "--prompt", "a blue square", "--seeds", "0-1", *FAST]
    one = tmp_path / "one"
    proc = _cli(*args, "--out", one)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    launch = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--num_processes", "2",
              "--cpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "studio",
              "run", *args, "--out", str(two)]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = manifest(two)
    assert [ln["folder"] for ln in lines] == [ln["folder"] for ln in manifest(one)]  # each item once, in order
    for ln in lines:
        for kind in ("svg", "png"):
            assert (two / ln["files"][kind]).read_bytes() == (one / ln["files"][kind]).read_bytes()
    assert not list(two.glob(".manifest.rank*"))


# ------------------------------------------------------------------------------------------- seeds in one batch
def _files(out: Path) -> dict[str, bytes]:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.glob("0*/*"))}


def test_batch_of_seeds_gives_the_files_and_lines_of_one_seed_runs(tmp_path):
    args = ["clipdraw", "--prompt", "a red circle", "--prompt", "a blue square", "--seeds", "0-2", *FAST]
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert run(*args, "--out", single) == 0
    assert run(*args, "--out", batched, "--batch", "2") == 0
    files = _files(single)
    assert len(files) == 6 * 3 and _files(batched) == files  # svg, png and mp4 of every item, byte for byte
    lines = manifest(batched)
    assert [ln["batch"] for ln in lines] == [2, 2, 1, 2, 2, 1]  # seeds 0-1 together, 2 alone, per prompt
    strip = lambda ls: [{k: v for k, v in ln.items() if k not in ("timings", "batch")} for ln in ls]  # noqa: E731
    assert strip(lines) == strip(manifest(single))
    assert run(*args, "--out", batched, "--batch", "2") == 0  # a rerun, batched or not, skips them all
    assert run(*args, "--out", single, "--batch", "3") == 0 and _files(single) == files


def test_batch_is_refused_by_name_for_a_task_that_runs_one_seed_at_a_time(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), "white").save(img)
    assert run("clipasso", "--images", img, "--out", tmp_path / "o", "--batch", "2", *FAST[:4]) == 2
    err = capsys.readouterr().err
    assert "runs one seed at a time" in err and "clipdraw" in err and err.count("\n") == 1
    assert run("clipdraw", "--prompt", "a", "--out", tmp_path / "o", "--batch", "0", *FAST) == 2
    assert "`--batch` must be in [1, 32], got 0" in capsys.readouterr().err


def test_iterate_seeds_equals_one_seed_runs_and_encodes_together_only_where_exact(demo_scorer, monkeypatch):
    from pipelines.clipdraw import CLIPDrawPipeline
    from studio.runner import drain

    pipe = CLIPDrawPipeline(demo_scorer)
    kw = dict(num_strokes=6, num_steps=4, canvas_size=32, negative_prompts=["a blue square"])
    singles = [pipe("a red circle", seed=s, **kw) for s in (3, 5)]
    calls = []
    encode = demo_scorer.encode_image
    monkeypatch.setattr(demo_scorer, "encode_image", lambda x: calls.append(len(x)) or encode(x))
    for invariant in (True, False):
        monkeypatch.setattr(demo_scorer, "batch_invariant", lambda n, k, v=invariant: v)
        calls.clear()
        out = drain(pipe.iterate_seeds("a red circle", seeds=[3, 5], **kw))
        assert [r.seed for r in out.results] == [3, 5]
        if invariant:  # where the probe says so, both seeds' 4 views go through the encoder in one call
            assert 8 in calls and 4 not in calls
            continue
        assert 8 not in calls  # else seed by seed, which is exactly what the single runs did
        for r, s in zip(out.results, singles):
            assert r.svg == s.svg and r.losses == s.losses and r.scores == s.scores
            assert [f.tobytes() for f in r.frames] == [f.tobytes() for f in s.frames]
    calls.clear()
    drain(pipe.iterate_seeds("a red circle", seeds=[3, 5], exact=False, **kw))
    assert 8 in calls  # not exact: always together (a GPU's default)


def test_batch_invariance_probe_tells_the_truth_on_other_images(demo_scorer):
    import torch

    torch.manual_seed(7)
    for n, k in ((4, 2), (4, 4), (3, 3)):
        x = torch.rand(n * k, 3, demo_scorer.image_size, demo_scorer.image_size)
        with torch.no_grad():
            same = torch.equal(demo_scorer.encode_image(x),
                               torch.cat([demo_scorer.encode_image(x[i * n:(i + 1) * n]) for i in range(k)]))
        if demo_scorer.batch_invariant(n, k):  # the probe said exact: it must hold on images it never saw
            assert same
    assert demo_scorer.batch_invariant(5, 1)


def test_iterate_seeds_stop_keeps_every_seeds_best_and_bad_seeds_are_refused(demo_scorer):
    from pipelines.clipdraw import CLIPDrawPipeline

    pipe = CLIPDrawPipeline(demo_scorer)
    gen = pipe.iterate_seeds("a red circle", seeds=[0, 1, 2], num_strokes=4, num_steps=50, canvas_size=32)
    for _ in range(3):
        p = next(gen)
    assert p.step == 3 and p.preview.size == (96, 32)  # the three seeds side by side
    out = gen.send("stop")
    assert out.done and [r.steps_run for r in out.results] == [3, 3, 3] and all(r.stopped for r in out.results)
    assert all(r.svg.startswith("<svg") and len(r.losses) == 3 for r in out.results)
    for bad in ([], [1, 1], 4, list(range(33))):
        with pytest.raises(ValueError, match="`seeds`"):
            next(pipe.iterate_seeds("a red circle", seeds=bad, num_steps=2))
    with pytest.raises(ValueError, match="`num_steps`"):
        next(pipe.iterate_seeds("a red circle", seeds=[0], num_steps=0))


def test_contact_sheets_rank_within_a_prompt_never_across_prompts():
    from studio.batch import sheet_order

    def line(prompt, seed, score):
        return {"inputs": {"prompt": prompt}, "seed": seed, "scores": {"clip_score": score}}

    # issue 29: "a cat on a sofa" (71.4) ranked above "a red circle" (67.0) in one list of both prompts
    lines = [line("a red circle", 0, 60.0), line("a red circle", 1, 67.0), line("a cat on a sofa", 0, 71.4),
             line("a cat on a sofa", 1, 50.0), line("a red circle", 2, 64.0)]
    assert [(ln["inputs"]["prompt"], ln["seed"]) for ln in sheet_order(lines)] == [
        ("a red circle", 1), ("a red circle", 2), ("a red circle", 0), ("a cat on a sofa", 0), ("a cat on a sofa", 1)]


def test_the_contact_sheet_captions_frames_shows_the_source_and_the_notice(tmp_path):
    import numpy as np

    from studio.batch import SHEET_BORDER, SHEET_CAPTION, contact_sheet

    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(tmp_path / "photo.png")  # the source: blue
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "a" / "sketch.png")  # the result: red
    line = {"inputs": {"image": str(tmp_path / "photo.png")}, "seed": 7, "scores": {"clip_score": 55.5},
            "files": {"png": "a/sketch.png"}, "error": None, "notice": "Using the bundled demo CLIP <shapes-clip>"}
    index, grid = contact_sheet(tmp_path, [line], "CLIPasso: 1 item", thumb=64)
    page = index.read_text(encoding="utf-8")
    assert "Using the bundled demo CLIP &lt;shapes-clip&gt;" in page  # the manifest's notice, on the sheet too
    g = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    b = SHEET_BORDER
    assert g.shape == (64 + 2 * b + SHEET_CAPTION, 2 * 64 + 2 * b, 3)  # the source beside the result, a caption
    assert tuple(g[b + 32, b + 32]) == (0, 0, 255) and tuple(g[b + 32, b + 64 + 32]) == (255, 0, 0)
    assert tuple(g[0, 0]) == (255, 255, 255)  # the white border around the frame
    caption = g[b + 64:, :]
    assert (caption.sum(axis=2) < 300).sum() > 20  # written text: the input's name, seed and score
