"""Time StyleCLIP's hot loops with the real architectures and random weights (random weights cost the same).

    python benchmarks/styleclip.py                      # FFHQ config-f 1024, CLIP ViT-B/32, best device
    python benchmarks/styleclip.py --device cpu --size 256 --steps 3

Rows: generator forward (batch 1, no grad); one latent-optimisation step (generator forward + backward through
CLIP, Adam update -- the body of `StyleCLIPPipeline.edit`), and 300 of them; one global-direction edit (text
direction, delta s, one generator pass; `relevance` given); the channel-relevance precompute, extrapolated from
one timed batch to `--relevance-samples` images (StyleCLIP's finite differences), and with `method="jacobian"`
(one sample's full Jacobian timed, times the sample count). Each in fp32 and bf16 (autocast). References for the same
config: StyleCLIP reports 98 s per optimisation edit and 72 ms per global-direction edit on a GTX 1080 Ti;
rosinality's StyleGAN2 (compiled CUDA ops, fp32) on an H100: 18.9 ms forward, 78 ms per optimisation step.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine, sync, table, timeit  # noqa: E402
from pipelines.styleclip import ChannelRelevance, StyleCLIPPipeline  # noqa: E402
from studio.device import pick_device  # noqa: E402
from studio.generators.stylegan2 import Generator  # noqa: E402
from studio.scorer import get_scorer  # noqa: E402


def fake_relevance(gen: Generator, dim: int) -> ChannelRelevance:
    """Random unit directions: an edit's cost does not depend on the relevance values."""
    sizes = [layer.channels for layer in gen.style_layers]
    analysed = torch.cat([torch.full((c,), not layer.is_rgb) for c, layer in zip(sizes, gen.style_layers)])
    rel = F.normalize(torch.randn(sum(sizes), dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    return ChannelRelevance(rel * analysed[:, None], torch.ones(sum(sizes)), analysed, sizes,
                            [layer.name for layer in gen.style_layers], 1, gen.identity())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--channel-multiplier", type=int, default=2)
    p.add_argument("--clip", default="ViT-B-32/random", help="CLIP spec; random weights by default")
    p.add_argument("--steps", type=int, default=10, help="optimisation steps timed per precision")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--relevance-samples", type=int, default=100)
    p.add_argument("--skip-jacobian", action="store_true", help="skip timing one full Jacobian (slow on CPU)")
    p.add_argument("--relevance-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a busy shared machine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    torch.manual_seed(0)
    gen = Generator(size=args.size, style_dim=512, n_mlp=8, channel_multiplier=args.channel_multiplier)
    gen.latent_avg = gen.mean_latent(4096)
    scorer = get_scorer(args.clip, device=device, precision="fp32")
    n_channels = sum(layer.channels for layer in gen.style_layers if not layer.is_rgb)
    print(f"# StyleCLIP benchmark: StyleGAN2 {args.size} (cm {args.channel_multiplier}, {n_channels} StyleSpace "
          f"channels), CLIP {args.clip}, {machine(device)}")
    rows = []
    for precision in args.precisions.split(","):
        pipe = StyleCLIPPipeline(gen, scorer, precision=precision)
        latent = pipe.random_latent(seed=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def forward():
            with torch.no_grad():
                pipe.render(latent)

        fwd = timeit(forward, device, warmup=1, repeat=3)
        pipe.edit(latent, "a smiling face", steps=2)  # warm-up
        sync(device)
        out = pipe.edit(latent, "a smiling face", steps=args.steps)
        sync(device)
        step_ms = out.timings["ms_per_step"]
        rel = fake_relevance(gen, scorer.embed_dim)
        direction = pipe.text_direction("a face", "a smiling face")

        def global_edit():
            with torch.no_grad():
                delta, _ = pipe.style_direction(rel, direction, 0.1)
                styles = gen.w_to_styles(latent)
                edited = [s + 4.1 * d for s, d in zip(styles, delta.to(device).split(rel.layer_sizes))]
                with pipe._autocast():
                    gen.synthesis(edited)

        edit_ms = timeit(global_edit, device, warmup=1, repeat=3)
        # channel relevance: one batch of perturbed renders + CLIP, extrapolated to all channels and samples
        b = args.relevance_batch

        def relevance_batch():
            with torch.no_grad():
                w = latent.repeat(b, 1, 1)
                with pipe._autocast():
                    pipe._clip_embed(gen.synthesis(gen.w_to_styles(w)))

        batch_ms = timeit(relevance_batch, device, warmup=1, repeat=2)
        relevance_min = batch_ms / b * 2 * n_channels * args.relevance_samples / 60000
        # method="jacobian": D rows of the Jacobian per sample, `b` per replicated forward+backward
        base = [s.detach() for s in gen.w_to_styles(latent)]
        jac_min = float("nan")
        if not args.skip_jacobian:
            jac_ms = timeit(lambda: pipe._jacobian_directions(base, b), device, warmup=0, repeat=1)
            jac_min = jac_ms * args.relevance_samples / 60000
        mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else "-"
        rows.append([precision, f"{fwd:.1f}", f"{step_ms:.1f}", f"{300 * step_ms / 1000:.1f}", f"{edit_ms:.1f}",
                     f"{relevance_min:.1f}", f"{jac_min:.1f}", mem])
    headers = ["precision", "generator fwd ms", "opt step ms", "300 steps s", "global edit ms",
               f"relevance {args.relevance_samples} imgs (min, est.)", "jacobian relevance (min)", "peak GiB"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
