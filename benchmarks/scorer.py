"""Benchmark the shared scorer: encode_image throughput and one differentiable score + backward.

The reference is what CLIP notebooks do: PIL preprocessing one image at a time through open_clip's own
transforms, then the model. Random weights of the real architecture give the real cost (no download).

    python benchmarks/scorer.py                 # CPU here
    python benchmarks/scorer.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import machine, table, timeit  # noqa: E402
from studio.scorer import get_scorer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    import open_clip

    scorer = get_scorer(f"{args.arch}/random", device=args.device, precision=args.precision)
    dev = scorer.device
    imgs = torch.rand(args.batch, 3, 256, 256, device=dev)
    pils = [Image.fromarray((np.random.rand(256, 256, 3) * 255).astype(np.uint8)) for _ in range(args.batch)]
    _, _, ref_pre = open_clip.create_model_and_transforms(args.arch, pretrained=None)
    texts = ["a drawing of a cat"]

    def ours():
        with torch.no_grad():
            scorer.encode_image(imgs)

    def reference():
        with torch.no_grad():
            x = torch.stack([ref_pre(im) for im in pils]).to(dev, scorer.dtype)
            scorer.model.encode_image(x)

    x5 = torch.rand(5, 3, 224, 224, device=dev)
    text_emb = scorer.encode_text(texts)

    def step_ours():
        x = x5.clone().requires_grad_(True)
        loss = -scorer.similarity(scorer.encode_image(x), text_emb).mean()
        loss.backward()

    def step_reference():  # the same step with the text re-encoded each time, as notebooks commonly do
        x = x5.clone().requires_grad_(True)
        xn = (torch.nn.functional.interpolate(x, size=scorer.image_size, mode="bicubic") - scorer.mean) / scorer.std
        ie = scorer.model.encode_image(xn.to(scorer.dtype)).float()
        te = scorer.model.encode_text(scorer.tokenizer(texts).to(dev)).float()
        loss = -torch.cosine_similarity(ie, te).mean()
        loss.backward()

    repeat = 5 if dev.type == "cpu" else 20
    t_ours, t_ref = timeit(ours, dev, repeat=repeat), timeit(reference, dev, repeat=repeat)
    s_ours, s_ref = timeit(step_ours, dev, repeat=repeat), timeit(step_reference, dev, repeat=repeat)
    print(f"scorer benchmark · {args.arch} (random weights) · {scorer.dtype} · {machine(dev)}")
    print(table(["measure", "studio", "reference", "ratio"], [
        [f"encode_image, images/s (batch {args.batch})", args.batch / t_ours * 1000, args.batch / t_ref * 1000,
         f"{t_ref / t_ours:.2f}x"],
        ["score + backward, ms (batch 5, 224²)", s_ours, s_ref, f"{s_ref / s_ours:.2f}x"],
    ]))


if __name__ == "__main__":
    main()
