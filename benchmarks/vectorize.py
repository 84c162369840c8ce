"""Vectorize against vtracer at the same path budget, in one run; print a table (and write JSON lines as it goes).

    PYTHONPATH=. python benchmarks/vectorize.py [--budgets 16,64,256] [--size 256] [--images a,b] [--out rows.jsonl]

Pictures (each fitted into `--size` pixels, longest side): scikit-image's bundled photos (astronaut, chelsea,
coffee, camera), two illustrations drawn here with our renderer (a landscape with a gradient sky; an icon of
overlapping shapes) and two flat logos drawn with PIL (rings and a star; blocks with text). For each picture and
budget N:

* ours: `VectorizePipeline` with its defaults and `num_paths=N` (fill mode, solid colours; `--paint gradient` for
  gradients), seed 0, one torch thread; its SVG drawn by resvg;
* vtracer (colour, stacked, spline): every combination of filter_speckle {2, 4, 8, 16, 32, 64, 128},
  color_precision {2, ..., 8} and layer_difference {8, 16, 32, 64, 128}; the best PSNR among the outputs with at
  most N `<path>`s (none: "-").

Fidelity is PSNR and SSIM (scikit-image, channel_axis) of resvg's drawing, composited on white, against the picture;
bytes are the SVG's size; seconds are wall time on this machine (vtracer's: the one conversion kept) and, for ours,
the process's CPU time beside it (one torch thread: about the wall time of a quiet core, whatever the load).
potrace traces one colour at a time (bitmaps), so it has no row here. Needs the dev extra (vtracer, scikit-image,
resvg-py).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import subprocess
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.common import table

PHOTOS = ("astronaut", "chelsea", "coffee", "camera")
DRAWN = ("landscape", "icon", "rings-logo", "blocks-logo")


def picture(name: str, size: int) -> Image.Image:
    """The named test picture, its longest side `size` pixels."""
    if name in PHOTOS:
        import skimage.data

        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        return img
    if name in ("landscape", "icon"):
        return _drawn(name, size)
    return _logo(name, size)


def _drawn(name: str, size: int) -> Image.Image:
    """Illustrations rasterised by our renderer: anti-aliased Bézier shapes, one with gradients."""
    from studio.render import Gradient, Path, Scene, render, to_uint8

    s = size / 256
    none = (0.0, 0.0, 0.0, 0.0)
    if name == "landscape":
        sky = Gradient.make("linear", [(0, (0.35, 0.55, 0.95)), (1, (0.98, 0.85, 0.65))], (0, 0, 0, 180 * s))
        sea = Gradient.make("linear", [(0, (0.1, 0.35, 0.55)), (1, (0.02, 0.12, 0.25))], (0, 170 * s, 0, 256 * s))
        paths = [
            Path([(0, 0), (256 * s, 0), (256 * s, 256 * s), (0, 256 * s)], degrees=1, closed=True, fill=sky,
                 stroke=none, stroke_width=0),
            Path(_disc(190 * s, 70 * s, 28 * s), closed=True, fill=(1.0, 0.8, 0.2), stroke=none, stroke_width=0),
            Path([(0, 190 * s), (60 * s, 90 * s), (110 * s, 150 * s), (150 * s, 100 * s), (256 * s, 190 * s)],
                 degrees=1, closed=True, fill=(0.25, 0.45, 0.3), stroke=none, stroke_width=0),
            Path([(0, 175 * s), (256 * s, 175 * s), (256 * s, 256 * s), (0, 256 * s)], degrees=1, closed=True,
                 fill=sea, stroke=none, stroke_width=0),
            Path([(60 * s, 200 * s), (90 * s, 185 * s), (140 * s, 185 * s), (170 * s, 200 * s), (140 * s, 215 * s),
                  (90 * s, 215 * s)], degrees=3, closed=True, fill=(0.9, 0.9, 0.92), stroke=none, stroke_width=0),
        ]
    else:
        paths = [Path(_disc(128 * s, 128 * s, 110 * s), closed=True, fill=(0.16, 0.2, 0.3), stroke=none,
                      stroke_width=0)]
        for c, col in [((100, 110), (0.95, 0.35, 0.3)), ((156, 110), (0.3, 0.75, 0.45)),
                       ((128, 155), (0.35, 0.5, 0.95))]:
            paths.append(Path(_disc(c[0] * s, c[1] * s, 48 * s), closed=True, fill=(*col, 0.85), stroke=none,
                              stroke_width=0))
        paths.append(Path([(128 * s, 60 * s), (150 * s, 120 * s), (128 * s, 200 * s), (106 * s, 120 * s)],
                          degrees=1, closed=True, fill=(1, 1, 1), stroke=(0.1, 0.1, 0.1, 1), stroke_width=4 * s))
    scene = Scene.from_paths(paths, size, size)
    return Image.fromarray(to_uint8(render(scene))[0])


def _disc(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    k = 4 / 3 * math.tan(math.pi / 8) * r
    pts = []
    for i in range(4):
        a, b = i * math.pi / 2, (i + 1) * math.pi / 2
        pts += [(cx + r * math.cos(a), cy + r * math.sin(a)),
                (cx + r * math.cos(a) - k * math.sin(a), cy + r * math.sin(a) + k * math.cos(a)),
                (cx + r * math.cos(b) + k * math.sin(b), cy + r * math.sin(b) - k * math.cos(b))]
    return pts


def _logo(name: str, size: int) -> Image.Image:
    """Flat-colour logos drawn with PIL (hard edges, few colours: what tracers are made for)."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    s = size / 256
    if name == "rings-logo":
        for r, col in ((110, "#1d4ed8"), (85, "white"), (70, "#f4c430"), (45, "white")):
            d.ellipse([128 * s - r * s, 128 * s - r * s, 128 * s + r * s, 128 * s + r * s], fill=col)
        star = [(128 + 40 * math.cos(a) * (1 if i % 2 == 0 else 0.45), 128 + 40 * math.sin(a) * (1 if i % 2 == 0
                 else 0.45)) for i, a in enumerate(np.linspace(-math.pi / 2, 1.5 * math.pi, 10, endpoint=False))]
        d.polygon([(x * s, y * s) for x, y in star], fill="#d62828")
    else:
        d.rectangle([20 * s, 30 * s, 120 * s, 130 * s], fill="#111111")
        d.rectangle([136 * s, 30 * s, 236 * s, 130 * s], fill="#d62828")
        d.rectangle([20 * s, 146 * s, 236 * s, 226 * s], fill="#1d4ed8")
        d.text((40 * s, 170 * s), "STUDIO", fill="white", font_size=int(36 * s))
    return img


def resvg_draw(svg: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: resvg's drawing of `svg` composited on white."""
    import resvg_py

    png = Image.open(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=svg)))).convert("RGBA")
    if png.size != size:
        png = png.resize(size)
    rgba = np.asarray(png, dtype=np.float64) / 255
    return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])


def fidelity(drawn: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    mse = float(((drawn - target) ** 2).mean())
    return (10 * math.log10(1 / mse) if mse > 0 else 99.0,
            float(structural_similarity(drawn, target, channel_axis=-1, data_range=1.0)))


def vtracer_outputs(img: Image.Image) -> list[dict]:
    """Every vtracer output over the settings grid: paths, svg, seconds."""
    import vtracer

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = []
    for fs, cp, ld in itertools.product((2, 4, 8, 16, 32, 64, 128), range(2, 9), (8, 16, 32, 64, 128)):
        t0 = time.perf_counter()
        svg = vtracer.convert_raw_image_to_svg(buf.getvalue(), img_format="png", colormode="color",
                                               hierarchical="stacked", mode="spline", filter_speckle=fs,
                                               color_precision=cp, layer_difference=ld)
        out.append({"paths": svg.count("<path"), "svg": svg, "s": time.perf_counter() - t0,
                    "settings": f"fs{fs}/cp{cp}/ld{ld}"})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budgets", default="16,64,256")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", default=",".join(PHOTOS + DRAWN))
    p.add_argument("--steps", type=int, default=None, help="steps per layer (default: the task's)")
    p.add_argument("--paint", default="solid", choices=("solid", "gradient"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append a JSON line per row here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from pipelines.vectorize import VectorizePipeline

    pipe = VectorizePipeline(device="cpu")
    budgets = [int(b) for b in args.budgets.split(",")]
    rows, wins = [], {b: [] for b in budgets}
    print(f"load before: {os.getloadavg()}", flush=True)
    for name in args.images.split(","):
        img = picture(name, args.size)
        target = np.asarray(img, dtype=np.float64) / 255
        traced = vtracer_outputs(img)
        for fs_out in traced:
            fs_out["psnr"], fs_out["ssim"] = fidelity(resvg_draw(fs_out["svg"], img.size), target)
        for n in budgets:
            settings = {"num_paths": n, "seed": 0, "paint": args.paint, "canvas_size": args.size}
            if args.steps:
                settings["num_steps"] = args.steps
            t0, c0 = time.perf_counter(), time.process_time()
            out = pipe(img, **settings)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            ours = fidelity(resvg_draw(out.svg, img.size), target)
            fits = [t for t in traced if t["paths"] <= n]
            best = max(fits, key=lambda t: t["psnr"]) if fits else None
            row = {"image": name, "budget": n, "ours_paths": out.scores["num_paths"], "ours_psnr": ours[0],
                   "ours_ssim": ours[1], "ours_bytes": len(out.svg.encode()), "ours_s": secs,
                   "ours_cpu_s": cpu,
                   "vt_paths": best["paths"] if best else None, "vt_psnr": best["psnr"] if best else None,
                   "vt_ssim": best["ssim"] if best else None, "vt_bytes": len(best["svg"].encode()) if best else None,
                   "vt_s": best["s"] if best else None, "vt_settings": best["settings"] if best else None,
                   "load": os.getloadavg()[0]}
            rows.append(row)
            wins[n].append(best is None or row["ours_psnr"] > row["vt_psnr"])
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    head = ["image", "paths", "ours PSNR", "vtracer PSNR", "ours SSIM", "vtracer SSIM", "ours KB", "vtracer KB",
            "ours s (CPU s)", "vtracer (paths, settings)"]
    print(table(head, [[r["image"], r["budget"], r["ours_psnr"], r["vt_psnr"] or "-", r["ours_ssim"],
                        r["vt_ssim"] or "-", r["ours_bytes"] / 1000, (r["vt_bytes"] or 0) / 1000,
                        f"{r['ours_s']:.0f} ({r['ours_cpu_s']:.0f})",
                        f"{r['vt_paths']}, {r['vt_settings']}" if r["vt_paths"] else "none fits"] for r in rows]))
    for n in budgets:
        if wins[n]:
            print(f"{n} paths: ours higher PSNR on {sum(wins[n])}/{len(wins[n])} pictures")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
