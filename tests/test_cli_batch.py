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
])
def test_bad_command_lines_get_one_line_and_a_non_zero_exit(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


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
