"""Benchmark CLIP Lens's video moment search and open-vocabulary detection, each against a reference in the same run.

Video (pipelines/lens_video.py): indexing frames/s of a synthetic clip, whole frames and with CLIFS patches, against
the naive loop a CLIFS-style notebook writes (decode every frame with imageio, keep one a second, preprocess each
crop with open_clip's PIL transforms and encode it alone); then one query on the cached embeddings.
Detection (pipelines/lens_detect.py): ms per image and accuracy (IoU >= 0.5 for "a blue square" over synthetic
scenes) against brute force (dense multi-scale windows at 25 % stride, every window scored).
Random weights of the real architecture give the real cost (no download); the demo CLIP gives accuracy too.

    python benchmarks/lens.py                      # CPU here, small
    python benchmarks/lens.py --device cuda --seconds 60 --scenes 20
Other Lens benchmarks (the image index) add their own rows to this file as functions of their own.
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
from PIL import Image  # noqa: E402

from benchmarks.common import machine, sync, table  # noqa: E402


def _naive_index(video: Path, scorer, preprocess, patch_size: int | None, max_side: int) -> int:
    """The reference: every frame decoded, one a second kept, each crop preprocessed (PIL) and encoded alone."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(video), format="FFMPEG")
    native = reader.get_meta_data()["fps"]
    kept = 0
    with torch.no_grad():
        for i, frame in enumerate(reader):
            if i % max(1, round(native)) != 0:
                continue
            img = Image.fromarray(frame)
            img.thumbnail((max_side, max_side))
            crops = [img]
            if patch_size:
                from pipelines.lens_video import patch_boxes

                crops += [img.crop(b) for b in patch_boxes(*img.size, patch_size, 0.5)]
            for c in crops:
                scorer.model.encode_image(preprocess(c)[None].to(scorer.device, scorer.dtype))
            kept += 1
    reader.close()
    sync(scorer.device)
    return kept


def video_rows(args, scorer, preprocess) -> list[list]:
    from pipelines.lens_video import LensVideoPipeline
    from studio.demo.scenes import Appearance, write_shapes_video

    folder = Path(tempfile.mkdtemp(prefix="bench-lens-video-"))
    w, h = args.video_size
    video = write_shapes_video(folder / "bench.mp4", [Appearance("red", "circle", 1.0, 3.0, (0.8, 0.3), 0.12)],
                               args.seconds, fps=25, size=(w, h))
    pipe = LensVideoPipeline(scorer, cache_dir=folder / "cache")
    rows = []
    for patches in (False, True):
        what = "with patches" if patches else "whole frame"
        out = pipe.search(video, "a red circle", patches=patches, use_cache=False, batch_frames=args.batch_frames)
        sync(scorer.device)
        ours = len(out.times_s) / out.timings["index_s"]  # hashing, decoding and encoding; not the thumbnails
        t0 = time.perf_counter()
        n = _naive_index(video, scorer, preprocess, 360 if patches else None, 720)
        ref = n / (time.perf_counter() - t0)
        rows.append([f"video indexing, {what} (frames/s)", round(ours, 2), round(ref, 2), f"{ours / ref:.1f}x"])
        print(rows[-1], flush=True)
    pipe.search(video, "a red circle", batch_frames=args.batch_frames)  # fills the cache
    runs = [pipe.search(video, "a blue square", batch_frames=args.batch_frames) for _ in range(3)]
    search = np.median([r.timings["index_s"] + r.timings["search_s"] for r in runs]) * 1000
    total = np.median([r.timings["total_s"] for r in runs]) * 1000
    rows.append(["video: a query on the cached video (ms): cache read + search / with thumbnails",
                 f"{search:.1f} / {total:.0f}", "—", ""])
    print(rows[-1], flush=True)
    return rows


def detect_rows(args, scorer, demo) -> list[list]:
    from pipelines.lens_detect import LensDetectPipeline
    from studio.demo.scenes import iou, make_scene

    scenes = [make_scene(s) for s in range(args.scenes)]

    def brute(pipe, scene):
        """Dense windows at 7 scales, 25 % stride, all scored: the brute-force reference."""
        boxes = []
        for s in (0.1, 0.14, 0.2, 0.28, 0.4, 0.56, 0.8):
            side = s * 256
            for y in np.arange(0, 256 - side + 1e-6, side / 4):
                for x in np.arange(0, 256 - side + 1e-6, side / 4):
                    boxes.append((x, y, x + side, y + side))
        pipe._proposals = lambda x, cfg: torch.tensor(boxes, dtype=torch.float32)  # the only change
        return pipe.detect(scene.image, "a blue square", threshold=0.0)

    rows = []
    for name, sc in (("demo CLIP", demo), (args.arch, scorer)):
        if sc is None:
            continue
        ours_pipe, ref_pipe = LensDetectPipeline(sc), LensDetectPipeline(sc)
        runs = (("regions (ours)", lambda s, p=ours_pipe: p.detect(s.image, "a blue square", threshold=0.0)),
                ("brute force", lambda s, p=ref_pipe: brute(p, s)))
        for label, run in runs:
            if label == "brute force" and sc is not demo and not args.full:
                rows.append([f"detection, {name}, {label} (ms/image)", "not run", "", "~4900 crops per image: "
                             "minutes on a CPU (--full runs it)"])
                continue
            if label != "brute force":
                run(scenes[0])  # warm-up (the brute force runs the same model right after)
            hits, t0 = 0, time.perf_counter()
            for s in scenes:
                out = run(s)
                hits += bool(out.boxes) and iou(out.boxes[0], s.find("blue", "square").box) >= 0.5
            sync(sc.device)
            ms = (time.perf_counter() - t0) / len(scenes) * 1000
            acc = f"{hits}/{len(scenes)}" if sc is demo else "(random weights)"
            rows.append([f"detection, {name}, {label} (ms/image)", round(ms, 1), acc, f"{out.proposals} boxes"])
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic video")
    p.add_argument("--video-size", type=int, nargs=2, default=(1280, 720))
    p.add_argument("--batch-frames", type=int, default=8)
    p.add_argument("--scenes", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--full", action="store_true", help="brute-force detection with the big model too")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    from studio.scorer import get_scorer

    scorer = get_scorer(f"{args.arch}/random", device=args.device)
    demo = get_scorer("shapes-clip", device=args.device)
    _, _, preprocess = open_clip.create_model_and_transforms(args.arch, pretrained=None)
    print(f"machine: {machine(scorer.device)}; {args.arch} random weights; video {args.seconds:g} s at "
          f"{args.video_size[0]}×{args.video_size[1]}, 1 frame/s sampled, patches 360 px at 50 % on 720-px frames")
    if not args.skip_video:
        video = video_rows(args, scorer, preprocess)
        print(table([f"{args.arch}: step", "ours", "naive loop", "speed-up"], video))
        print()
    print(table(["step", "ms/image", "accuracy (demo) or note", "proposals of the last image"],
                detect_rows(args, scorer, demo)))


if __name__ == "__main__":
    main()
