"""Time `from_svg` on a 3 000-element document against the importer it replaced, in the same run; print a table.

    PYTHONPATH=. python benchmarks/svg_import.py [--elements 3000] [--repeats 5] [--before COMMIT] [--profile]

The document is what both importers read (the old one knew no CSS sheets, `<use>` or gradients): `--elements`
shapes in groups of 50 under translated `<g>`s, cycling through a path of three cubic/line/arc commands, a rect, a
circle and a polyline, with presentation attributes and `style` declarations (fill, stroke, stroke-width,
opacity of one layer, linecap/linejoin). "reference" is the renderer package `studio/render` at commit 14defa9
(the importer before the rewrite, with its scene builder), `--before COMMIT` adds the package at another commit;
both are read with `git archive` (rows skipped without git). All build the `Scene`; median of `--repeats` after
one warm-up, the importers taking turns, each run after a `gc.collect()`. `--profile` prints cProfile's top
functions of the current importer.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import gc
import importlib.util
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from studio.render import from_svg

REFERENCE_COMMIT = "14defa9"


def document(n: int) -> str:
    shapes = []
    for i in range(n):
        x, y = (i * 7) % 180 + 10, (i * 13) % 180 + 10
        k = i % 4
        if k == 0:
            el = (f'<path d="M{x} {y} C{x + 10} {y - 8} {x + 20} {y + 8} {x + 30} {y} L{x + 30} {y + 12} '
                  f'A6 6 0 0 1 {x + 18} {y + 12} Z" fill="#{i * 2654435761 % 0xFFFFFF:06x}" stroke="black" '
                  'stroke-width="1.5"/>')
        elif k == 1:
            el = (f'<rect x="{x}" y="{y}" width="14" height="9" style="fill: rgb(20, {i % 255}, 200); '
                  'opacity: 0.8"/>')
        elif k == 2:
            el = f'<circle cx="{x}" cy="{y}" r="5" fill="none" stroke="#c33" stroke-width="2"/>'
        else:
            el = (f'<polyline points="{x},{y} {x + 8},{y + 6} {x + 16},{y}" fill="none" stroke="navy" '
                  'stroke-linecap="round" stroke-linejoin="round"/>')
        shapes.append(el)
    groups = [f'<g transform="translate({j % 3} {j % 5})">' + "".join(shapes[j:j + 50]) + "</g>"
              for j in range(0, n, 50)]
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="224" height="224" viewBox="0 0 224 224">'
            + "".join(groups) + "</svg>")


def snapshot_importer(commit: str):
    """`from_svg` of the renderer package `studio/render` as it was at `commit` (read with `git archive` into a
    temporary folder and imported under a name of its own, so it runs beside the current one), or None."""
    folder = tempfile.mkdtemp(prefix="svg_import_bench_")
    atexit.register(shutil.rmtree, folder, True)
    try:
        tar = subprocess.run(["git", "archive", commit, "studio/render"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=tar, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    name = f"render_at_{commit}"
    root = os.path.join(folder, "studio", "render")
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.from_svg


def timed(importers: dict, text: str, repeats: int) -> dict[str, tuple[float, int]]:
    """Median ms and scene paths per importer; the importers take turns in every round, so a change in the
    machine's load reaches all of them alike."""
    paths = {name: fn(text).num_paths for name, fn in importers.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in importers}
    for _ in range(repeats):
        for name, fn in importers.items():
            gc.collect()  # each run starts from the same collector state (a full collection is otherwise
            # triggered by whatever ran before, and costs as much as the process heap, torch included)
            t0 = time.perf_counter()
            fn(text)
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t) * 1000, paths[name]) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--elements", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--before", default=None, help="also time the importer at this commit (e.g. before a change)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    text = document(args.elements)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {len(text)} characters, "
          f"{args.elements} elements")
    importers = {}
    for label, commit in (("reference", REFERENCE_COMMIT), ("before", args.before)):
        fn = snapshot_importer(commit) if commit else None
        if fn is not None:
            importers[f"{label} ({commit})"] = fn
    importers["current"] = from_svg
    results = timed(importers, text, args.repeats)
    first = next(iter(results.values()))[0]
    print("| importer | ms (median) | scene paths | ratio to the first row |")
    print("|---|---:|---:|---:|")
    for name, (ms, n) in results.items():
        print(f"| {name} | {ms:.1f} | {n} | {ms / first:.2f}x |")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        from_svg(text)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
