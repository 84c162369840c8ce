"""Time full CLIPDraw and CLIPasso runs with the real CLIP architectures (random weights cost the same); print a table.

    PYTHONPATH=. python benchmarks/sketch.py [--threads 1]        # the small CPU setting
    PYTHONPATH=. python benchmarks/sketch.py --device cuda --full # the issue's targets on a GPU

CLIPDraw runs ViT-B-32 (Frans et al. 2021's model); CLIPasso runs ViT-B-32 for the attention initialisation and
RN101 for the geometric + semantic loss (Vinker et al. 2022's models), several seeds in one batch. `--full` is the
papers' setting: CLIPDraw 256 paths × 1000 steps at 224; CLIPasso 16 strokes × 2000 steps × 3 seeds (early
stopping off, so every step is timed). The issue's targets on one H100: CLIPDraw ≤ 30 s, CLIPasso ≤ 60 s.
Model loading is not timed; a 2-step warm-up run precedes each timed run (allocator, kernels, text cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.clipasso import CLIPassoPipeline  # noqa: E402
from pipelines.clipdraw import CLIPDrawPipeline  # noqa: E402
from studio.scorer import get_scorer  # noqa: E402


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} " \
           f"torch threads"


def test_photo(size: int = 256) -> Image.Image:
    """A synthetic photo: two overlapping shapes on a gradient background."""
    y, x = np.mgrid[0:size, 0:size] / size
    bg = (np.stack([0.9 - 0.2 * y, 0.9 - 0.1 * x, 0.95 * np.ones_like(x)], -1) * 255).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    d.ellipse((0.2 * size, 0.25 * size, 0.65 * size, 0.7 * size), fill=(200, 40, 40))
    d.rectangle((0.45 * size, 0.4 * size, 0.85 * size, 0.8 * size), fill=(40, 60, 190))
    return img


def settings(pipe, **kw):
    """The run protocol's setting names, mapped to the older names when the pipeline predates them, so this one
    script times both sides of a before/after comparison (benchmarks/before_after.py)."""
    import inspect

    if "num_iterations" in inspect.signature(pipe.iterate).parameters:
        old = {"num_steps": "num_iterations", "num_strokes": "num_strokes"}
        if isinstance(pipe, CLIPDrawPipeline):
            old["num_strokes"] = "num_paths"
        kw = {old.get(k, k): v for k, v in kw.items()}
    return kw


def ms_per_step(timings: dict) -> float:
    return timings["ms_per_step"] if "ms_per_step" in timings else 1000 * timings["per_step_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="the papers' setting (slow on a CPU)")
    p.add_argument("--paths", type=int, default=32)
    p.add_argument("--draw-steps", type=int, default=20)
    p.add_argument("--strokes", type=int, default=8)
    p.add_argument("--sketch-steps", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--canvas", type=int, default=224)
    p.add_argument("--skip", choices=["clipdraw", "clipasso"], default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on an oversubscribed CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full:
        args.paths, args.draw_steps, args.strokes, args.sketch_steps, args.seeds = 256, 1000, 16, 2000, 3
    vit = get_scorer("ViT-B-32/random", device=args.device)
    dev = vit.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []

    if args.skip != "clipdraw":
        pipe = CLIPDrawPipeline(vit)
        prompt = "a watercolor painting of an underwater submarine"
        kw = dict(num_strokes=args.paths, canvas_size=args.canvas, seed=0)
        pipe(prompt, **settings(pipe, num_steps=2, **kw))  # warm-up
        sync()
        t = time.perf_counter()
        out = pipe(prompt, **settings(pipe, num_steps=args.draw_steps, **kw))
        sync()
        wall = time.perf_counter() - t
        ms = ms_per_step(out.timings)
        rows.append(("CLIPDraw", "ViT-B-32", f"{args.paths} paths × {args.draw_steps} steps, {args.canvas}²",
                     wall, ms, ms))

    if args.skip != "clipasso":
        rn = get_scorer("RN101/random", device=args.device)
        pipe = CLIPassoPipeline(vit, rn)
        kw = dict(num_strokes=args.strokes, num_seeds=args.seeds, canvas_size=args.canvas, seed=0,
                  early_stopping=False)
        photo = test_photo()
        pipe(photo, **settings(pipe, num_steps=2, **kw))  # warm-up
        sync()
        t = time.perf_counter()
        out = pipe(photo, **settings(pipe, num_steps=args.sketch_steps, **kw))
        sync()
        wall = time.perf_counter() - t
        ms = ms_per_step(out.timings)
        rows.append(("CLIPasso", "ViT-B-32 + RN101",
                     f"{args.strokes} strokes × {args.sketch_steps} steps × {args.seeds} seeds, {args.canvas}²",
                     wall, ms, 2 * ms))

    load = f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"machine: {machine(dev)}; torch {torch.__version__}; dtype {vit.dtype}{load}")
    print("| run | CLIP | setting | wall s | ms / step | same setting at 1000 / 2000 steps, s |")
    print("|---|---|---|---:|---:|---:|")
    for name, model, setting, wall, ms, full in rows:
        print(f"| {name} | {model} | {setting} | {wall:.1f} | {ms:.0f} | {full:.0f} |")


if __name__ == "__main__":
    main()
