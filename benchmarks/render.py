"""Time the renderer's forward + backward on the scenes CLIPDraw and CLIPasso optimise, and on styled SVG-like
scenes (filled icons with holes and gradients; dashed, mitred strokes); print a table.

    PYTHONPATH=. python benchmarks/render.py [--device cpu|cuda] [--repeats 10] [--skip-reference] [--skip-resvg]

Scenes are initialised the way the papers' code does: CLIPDraw (Frans et al. 2021, the official notebook: each path
starts at a uniform random point and every next control point is a random offset of up to +-0.05 of the canvas),
256 open paths of 1-3 cubic segments, widths 1-5, random RGBA; CLIPasso (Vinker et al. 2022, `painter_params.py`:
offsets of up to +-0.025 of the canvas), 16 black one-segment strokes of width 1.5, a batch of 3 seeds. 224 x 224.
Icons: an 8 x 8 grid of 64 filled rings (outer and inner circle in one even-odd path, so the inner one is a hole)
with linear or radial gradient fills and a 1.5 px butt/miter outline. Dashed: 64 four-segment zigzags, width 2-4,
miter joins, butt caps, dashes 6 on 3 off. The resvg column renders `to_svg` of the same scene with resvg_py
(forward only, not differentiable; it includes parsing and PNG encoding).
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import time

import torch

from studio.render import Gradient, Path, Scene, Subpath, Topology, render, to_image, to_svg


def clipdraw_scene(num_paths: int = 256, size: int = 224, seed: int = 0, device: str = "cpu", radius: float = 0.1,
                   max_width: float = 5.0) -> Scene:
    g = torch.Generator().manual_seed(seed)
    nseg = torch.randint(1, 4, (num_paths,), generator=g).tolist()
    pts = []
    for n in nseg:
        p = torch.rand(1, 2, generator=g)
        steps = (torch.rand(3 * n, 2, generator=g) - 0.5) * radius  # radius 0.1 in the notebook
        pts.append(torch.cat([p, p + torch.cumsum(steps, 0)]))
    points = (torch.cat(pts) * size)[None]
    widths = 1 + (max_width - 1) * torch.rand(1, num_paths, generator=g)
    colours = torch.rand(1, num_paths, 4, generator=g)
    return Scene(Topology(nseg, [False] * num_paths), points, widths, colours, width=size, height=size).to(device)


def clipasso_scene(num_strokes: int = 16, batch: int = 3, size: int = 224, seed: int = 0,
                   device: str = "cpu") -> Scene:
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(batch, num_strokes, 1, 2, generator=g)
    steps = (torch.rand(batch, num_strokes, 3, 2, generator=g) - 0.5) * 0.05  # radius 0.05 in CLIPasso
    points = (torch.cat([start, start + torch.cumsum(steps, 2)], 2) * size).reshape(batch, -1, 2)
    widths = torch.full((batch, num_strokes), 1.5)
    colours = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, num_strokes, 4).clone()
    topo = Topology([1] * num_strokes, [False] * num_strokes)
    return Scene(topo, points, widths, colours, width=size, height=size).to(device)


def _circle(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    k = 0.5522847498307936 * r
    return [(cx + r, cy), (cx + r, cy + k), (cx + k, cy + r), (cx, cy + r), (cx - k, cy + r), (cx - r, cy + k),
            (cx - r, cy), (cx - r, cy - k), (cx - k, cy - r), (cx, cy - r), (cx + k, cy - r), (cx + r, cy - k)]


def icons_scene(size: int = 224, grid: int = 8, seed: int = 0, device: str = "cpu") -> Scene:
    g = torch.Generator().manual_seed(seed)
    cell = size / grid
    paths = []
    for i in range(grid * grid):
        cx, cy = (i % grid + 0.5) * cell, (i // grid + 0.5) * cell
        c = torch.rand(2, 3, generator=g).tolist()
        stops = [(0.0, c[0]), (1.0, c[1])]
        if i % 2:
            paint = Gradient.make("linear", stops, (cx - cell / 3, cy - cell / 3, cx + cell / 3, cy + cell / 3))
        else:
            paint = Gradient.make("radial", stops, (cx, cy, cell * 0.4, cx - 2, cy - 2, 0), spread="reflect")
        paths.append(Path(_circle(cx, cy, cell * 0.42), closed=True, fill=paint, fill_rule="evenodd",
                          subpaths=[Subpath(_circle(cx, cy, cell * 0.2), closed=True)], stroke_width=1.5,
                          stroke=(0.1, 0.1, 0.1, 1), cap="butt", join="miter"))
    return Scene.from_paths(paths, size, size).to(device)


def dashed_scene(num_paths: int = 64, size: int = 224, seed: int = 0, device: str = "cpu") -> Scene:
    g = torch.Generator().manual_seed(seed)
    paths = []
    for _ in range(num_paths):
        x, y = (torch.rand(2, generator=g) * size * 0.8).tolist()
        ang = float(torch.rand(1, generator=g)) * math.pi
        pts = [(x + 12 * k * math.cos(ang) + (6 if k % 2 else -6) * math.sin(ang),
                y + 12 * k * math.sin(ang) - (6 if k % 2 else -6) * math.cos(ang)) for k in range(5)]
        paths.append(Path(pts, degrees=1, stroke_width=2 + 2 * float(torch.rand(1, generator=g)),
                          stroke=(*torch.rand(3, generator=g).tolist(), 1.0), cap="butt", join="miter",
                          dash=(6, 3)))
    return Scene.from_paths(paths, size, size).to(device)


def time_resvg(scene: Scene, repeats: int) -> float | None:
    """Median milliseconds for resvg_py to draw the SVG of scene 0 (None when resvg_py is not installed)."""
    try:
        import resvg_py
    except ImportError:
        return None
    svg = to_svg(scene)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        resvg_py.svg_to_bytes(svg_string=svg)
        out.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(out)


def time_fwd_bwd(scene: Scene, backend: str, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median forward and forward+backward milliseconds."""
    scene = scene.clone().requires_grad_()
    weight = torch.rand(scene.batch_size, 3, scene.height, scene.width, generator=torch.Generator().manual_seed(1))
    weight = weight.to(scene.device)
    sync = torch.cuda.synchronize if scene.device.type == "cuda" else (lambda: None)
    fwd, both = [], []
    for i in range(repeats + warmup):  # warm-up runs (allocator, kernels) are not counted
        sync()
        t0 = time.perf_counter()
        img = to_image(render(scene, backend=backend))
        sync()
        t1 = time.perf_counter()
        (img * weight).sum().backward()
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            fwd.append(1e3 * (t1 - t0))
            both.append(1e3 * (t2 - t0))
    return statistics.median(fwd), statistics.median(both)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--reference-repeats", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-resvg", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
                                                                      f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {dev} ({name})")
    scenes = {"CLIPDraw 256 paths, B=1": lambda: clipdraw_scene(device=args.device),
              "CLIPasso 16 strokes, B=3": lambda: clipasso_scene(device=args.device),
              "64 icons: holes + gradients, B=1": lambda: icons_scene(device=args.device),
              "64 dashed mitred zigzags, B=1": lambda: dashed_scene(device=args.device)}
    rows: list = []
    for label, make in scenes.items():
        rows.append([label, time_fwd_bwd(make(), "torch", args.repeats), None,
                     None if args.skip_resvg else time_resvg(make(), args.repeats)])
    fast_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.skip_reference:
        for row in rows:
            row[2] = time_fwd_bwd(scenes[row[0]](), "reference", args.reference_repeats, warmup=0)
    print("| scene | fast fwd ms | fast fwd+bwd ms | reference fwd+bwd ms | speed-up | resvg ms (fwd only) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fast, ref, rv in rows:
        r = f"{ref[1]:.0f} | {ref[1] / fast[1]:.0f}x" if ref else "- | -"
        rs = f"{rv:.1f}" if rv is not None else "-"
        print(f"| {label} | {fast[0]:.1f} | {fast[1]:.1f} | {r} | {rs} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {fast_rss:.0f} MiB after the fast path, {peak:.0f} MiB after the reference "
          "(whole process, CPU)")
    if dev.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
