"""Benchmark the persistent image index (studio/index.py, pipelines/lens_index.py).

1. Index build, images/s: `lens-index` over a folder of generated PNGs (decode, thumbnail, encode, write), against
   the scorer's bare `encode_image` on the same images already decoded (the encoder's own ceiling), in one run.
   Random weights of the real architecture give the real cost (no download).
2. Query ms at N rows of synthetic unit embeddings (512-d, ViT-B-32's width): LanceDB's exact scan, the IVF-Flat
   index the studio builds from `ANN_MIN_ROWS` rows (its build time and recall@10 against the exact answer), and
   brute-force NumPy (the vectors in memory: one matmul and an argpartition) as the reference.

    python benchmarks/lens_index.py                                  # CPU here
    python benchmarks/lens_index.py --device cuda --images 20000     # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine, sync, table  # noqa: E402


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (opens files, fills caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def build_rows(arch: str, n_images: int, device: str, batch: int) -> list[list[object]]:
    import lancedb  # noqa: F401 — imported once before timing (its first import is seconds on a busy CPU)
    from PIL import Image

    from pipelines.lens_index import CLIPIndexPipeline
    from studio.demo.shapes import make_sample
    from studio.images import load_image, resize_crop, to_tensor
    from studio.scorer import get_scorer

    torch.manual_seed(0)
    spec = arch if arch == "shapes-clip" else f"{arch}/random"
    scorer = get_scorer(spec, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(n_images):  # 256² PNGs: a photo-sized decode without a photo collection
            Image.fromarray(make_sample(i, image_size=256).image).save(folder / f"{i:05d}.png")
        pixels = torch.cat([resize_crop(to_tensor(load_image(folder / f"{i:05d}.png")), scorer.image_size)
                            for i in range(n_images)])

        def encode_only():
            with torch.no_grad():
                for i in range(0, n_images, batch):
                    scorer.encode_image(pixels[i:i + batch].to(scorer.device))
            sync(scorer.device)

        encode_only()  # warm-up
        t0 = time.perf_counter()
        encode_only()
        t_ref = time.perf_counter() - t0
        pipe = CLIPIndexPipeline(scorer)
        t0 = time.perf_counter()
        out = pipe.index(folder, batch_size=batch)
        t_index = time.perf_counter() - t0
        assert out.rows == n_images, out.report()
        t0 = time.perf_counter()
        again = pipe.index(folder, batch_size=batch)
        t_again = time.perf_counter() - t0
        assert again.encoded == 0
        shares = ", ".join(f"{k[:-2]} {v / t_index:.0%}" for k, v in out.timings.items() if k in
                           ("read_s", "encode_s", "write_s", "plan_s"))
        rows.append([f"index {n_images} images ({arch})", f"{n_images / t_index:.1f} img/s",
                     f"{n_images / t_ref:.1f} img/s", f"{t_ref / t_index:.2f}×", shares])
        rows.append([f"re-index, nothing changed ({n_images})", f"{t_again * 1000:.0f} ms", "—", "—",
                     "stat + compare only"])
    return rows


PROBES = (10, 20, 40)  # IVF partitions probed per query (LanceDB's default: 20)


def query_row(n: int, dim: int, repeat: int, rng: np.random.Generator, top_k: int = 10) -> list[object]:
    from studio.index import ANN_MIN_ROWS, ImageIndex

    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    # queries near stored points (a photo like one in the collection), and their exact answers
    queries = vecs[rng.integers(0, n, 20)] + 0.7 * rng.standard_normal((20, dim)).astype(np.float32) / dim ** .5
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [set(np.argsort(-(vecs @ q))[:top_k].tolist()) for q in queries]
    qi = iter(range(10**9))
    with tempfile.TemporaryDirectory() as tmp:
        idx = ImageIndex(tmp)
        idx.create("synthetic", "weights", "none", dim)
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            idx.add([{"path": f"{j:07d}.png", "size": 1, "mtime_ns": 1, "width": 1, "height": 1,
                      "thumbnail": b"", "vector": vecs[j]} for j in range(i, min(n, i + 10_000))])
        idx.finish(ann_min_rows=10**9)  # compact only: exact scans first
        t_add = time.perf_counter() - t0

        def lance_query(nprobes: int = 20):
            idx.search(queries[next(qi) % 20], top_k, thumbnails=False, nprobes=nprobes)

        def numpy_query():
            s = vecs @ queries[next(qi) % 20]
            top = np.argpartition(-s, top_k)[:top_k]
            return top[np.argsort(-s[top])]

        flat = _median_ms(lance_query, repeat)
        ref = _median_ms(numpy_query, max(repeat, 20))
        ann, recall, build = [], [], None
        if n >= 2_000:
            t0 = time.perf_counter()
            assert idx.finish(ann_min_rows=min(n, ANN_MIN_ROWS)) == "built"
            build = time.perf_counter() - t0
            for nprobes in PROBES:
                ann.append(_median_ms(lambda p=nprobes: lance_query(p), max(repeat, 20)))
                got = [{int(Path(h.path).stem) for h in idx.search(q, top_k, thumbnails=False, nprobes=nprobes)}
                       for q in queries]
                recall.append(float(np.mean([len(g & t) / top_k for g, t in zip(got, truth)])))
    return [f"{n:,} rows", f"{t_add:.1f} s", f"{flat:.1f}", " / ".join(f"{a:.1f}" for a in ann) or "—",
            f"{build:.1f} s" if build is not None else "—", " / ".join(f"{r:.2f}" for r in recall) or "—",
            f"{ref:.1f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="ViT-B-32", help="CLIP architecture for the build rows (random weights), or "
                   "shapes-clip")
    p.add_argument("--images", type=int, default=64, help="images in the build folder")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", default="1000,5000,10000,100000", help="rows of the query benchmark")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()
    load0 = os.getloadavg()
    print(f"# {machine(torch.device(args.device))}; load average at start {load0[0]:.1f}")
    if not args.skip_build:
        print(table(["build", "studio (lens-index)", "encoder alone", "studio / encoder", "time shares"],
                    build_rows(args.arch, args.images, args.device, args.batch)))
        print()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = [query_row(n, args.dim, args.repeat, np.random.default_rng(0)) for n in sizes]
    probes = "/".join(map(str, PROBES))
    print(table(["table", "add", "LanceDB exact ms", f"LanceDB IVF ms ({probes} probes)", "IVF build",
                 f"IVF recall@10 ({probes})",
                 "NumPy brute force ms"], rows))
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
