"""Time the renderer's forward + backward on the scenes CLIPDraw and CLIPasso optimise; print a table.

    PYTHONPATH=. python benchmarks/render.py [--device cpu|cuda] [--repeats 10] [--skip-reference]

Scenes are initialised the way the papers' code does: CLIPDraw (Frans et al. 2021, the official notebook: each path
starts at a uniform random point and every next control point is a random offset of up to +-0.05 of the canvas),
256 open paths of 1-3 cubic segments, widths 1-5, random RGBA; CLIPasso (Vinker et al. 2022, `painter_params.py`:
offsets of up to +-0.025 of the canvas), 16 black one-segment strokes of width 1.5, a batch of 3 seeds. 224 x 224.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from studio.render import Scene, Topology, render, to_image


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
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
                                                                      f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {dev} ({name})")
    rows: list = []
    for label, scene in (("CLIPDraw 256 paths, B=1", clipdraw_scene(device=args.device)),
                         ("CLIPasso 16 strokes, B=3", clipasso_scene(device=args.device))):
        fast = time_fwd_bwd(scene, "torch", args.repeats)
        rows.append((label, fast, None))
    fast_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.skip_reference:
        for i, (label, fast, _) in enumerate(rows):
            scene = clipdraw_scene(device=args.device) if i == 0 else clipasso_scene(device=args.device)
            rows[i] = (label, fast, time_fwd_bwd(scene, "reference", args.reference_repeats, warmup=0))
    print("| scene | fast fwd ms | fast fwd+bwd ms | reference fwd+bwd ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for label, fast, ref in rows:
        r = f"{ref[1]:.0f} | {ref[1] / fast[1]:.0f}x" if ref else "- | -"
        print(f"| {label} | {fast[0]:.1f} | {fast[1]:.1f} | {r} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {fast_rss:.0f} MiB after the fast path, {peak:.0f} MiB after the reference "
          "(whole process, CPU)")
    if dev.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
