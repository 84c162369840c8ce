"""Items per minute of `clip-studio run`: separate invocations vs one run vs batched seeds vs accelerate processes.

    python benchmarks/batch.py [--items 8] [--steps 20] [--batch 4] [--clip shapes-clip] [--device cpu]
    python benchmarks/batch.py --clip ViT-B-32/random --device cuda --steps 100     # on a GPU

CLIPDraw (small settings: 16 strokes, 64² canvas), `--items` items of 2 prompts × items/2 seeds:
- `separate`: one `clip-studio run` per item (what a shell loop over prompts does: every item pays the start-up,
  imports and model load);
- `one run`: all items in one `clip-studio run` (the model loads once);
- `one run --batch K` (a row per K in `--batch 2,4`): K seeds of a prompt optimised together (their views encoded
  in one call where that is exact, `CLIPScorer.batch_invariant`, which the table reports);
- `accelerate ×2`: `accelerate launch --num_processes 2 --cpu`, one torch thread per process (CPU only).
All use one torch thread per process, so the comparison is of the same compute. Start-up is included: it is what
a user waits for. The machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def _encoder(a, k: int) -> str:
    """Whether --batch encodes the seeds' views together (exact on this machine) or seed by seed."""
    import torch

    torch.set_num_threads(1)
    from studio.scorer import get_scorer

    scorer = get_scorer(a.clip, device=a.device)
    if a.device != "cpu":
        return "encoded together"
    return "encoded together" if scorer.batch_invariant(4, k) else "encoded seed by seed"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", default="4", help="batch sizes, comma-separated (a row each)")
    p.add_argument("--clip", default="shapes-clip", help="CLIP spec (ARCH/random for a real architecture)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    prompts = ["a red circle", "a blue square"]
    n_prompts = min(len(prompts), a.items)
    seeds = -(-a.items // n_prompts)
    base = [sys.executable, "-m", "studio", "run", "clipdraw", "--clip", a.clip, "--device", a.device,
            "--num-strokes", "16", "--num-steps", str(a.steps), "--canvas-size", "64", "--quiet"]
    items = [(pr, s) for s in range(seeds) for pr in prompts[:n_prompts]][: a.items]
    tmp = Path(tempfile.mkdtemp(prefix="studio-batch-bench-"))
    try:
        rows = []
        t = sum(_run(base + ["--prompt", pr, "--seeds", str(s), "--out", str(tmp / "sep" / f"{i}")])
                for i, (pr, s) in enumerate(items))
        rows.append(("separate invocations", t))
        many = [x for pr in prompts[:n_prompts] for x in ("--prompt", pr)]
        seed_arg = ["--seeds", f"0-{seeds - 1}"]
        rows.append(("one run", _run(base + many + seed_arg + ["--out", str(tmp / "one")])))
        same = True
        for k in (int(x) for x in a.batch.split(",")):
            rows.append((f"one run --batch {k} ({_encoder(a, k)})",
                         _run(base + many + seed_arg + ["--batch", str(k), "--out", str(tmp / f"batch{k}")])))
            same &= all((tmp / f"batch{k}" / f.relative_to(tmp / "one")).read_bytes() == f.read_bytes()
                        for f in (tmp / "one").glob("0*/clipdraw.svg"))
        accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
        if accelerate and a.device == "cpu":
            cmd = [accelerate, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"] + base[1:]
            rows.append(("accelerate ×2 processes", _run(cmd + many + seed_arg + ["--out", str(tmp / "acc")])))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"
    print(f"CLIPDraw, {a.clip} on {a.device}, 16 strokes × {a.steps} steps at 64², {len(items)} items; "
          f"{os.cpu_count()} CPUs, 1 torch thread per process; load average {load}; batched SVGs equal one-seed "
          f"runs' byte for byte: {same}")
    print("| how | wall s | items / min | vs separate |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.1f} | {60 * len(items) / t:.1f} | {rows[0][1] / t:.2f}× |")


if __name__ == "__main__":
    main()
