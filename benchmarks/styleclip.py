"""Time StyleCLIP's hot loops with the real architectures and random weights (random weights cost the same).

    python benchmarks/styleclip.py                      # FFHQ config-f 1024, CLIP ViT-B/32, best device
    python benchmarks/styleclip.py --device cpu --size 256 --steps 3

Rows: generator forward (batch 1, no grad); one latent-optimisation step (generator forward + backward through
CLIP, Adam update -- the body of `StyleCLIPPipeline.edit`), and 300 of them; one global-direction edit (text
direction, delta s, one generator pass; `relevance` given); the channel-relevance precompute, extrapolated from
one timed batch to `--relevance-samples` images (StyleCLIP's finite differences), and with `method="jacobian"`
(one sample's full Jacobian timed, times the sample count). Each in fp32 and bf16 (autocast). First, a table of
channel-relevance samples per minute, finite differences vs the Jacobian, each extrapolated from one timed pass
of the pipeline's own code (`--relevance-only` prints just that one).

A second table (`--tables mapper`, fp32): StyleCLIP's latent mapper -- one training step (batch `--mapper-batch`,
StyleCLIP's 2: mapper forward, two generator passes and CLIP, backward, Adam; the mean of `--mapper-steps` steps
after one warm-up) and one apply (mapper forward + one generator pass: the instant edit), against the same run's
300-step latent optimisation; e4e's encoder (IR-SE-50, 256-pixel input, random weights) for one image against an
optimisation inversion of `--invert-steps` timed steps (per step, and extrapolated to the default 200).

The reference in the same run ("reference" rows, `--formulations`): the same generator and weights computed the
way rosinality's code does without its CUDA build -- per-sample modulated and demodulated weights in one grouped
convolution (the paper's formulation, rosinality's `fused=True` path), and `upfirdn2d` by zero insertion, padding
and a full 2-D FIR convolution (its `upfirdn2d_native`). Ours modulates the activations instead (one shared-weight
convolution for the batch) and upsamples with one strided depthwise transposed convolution. The table's last
column is the largest pixel difference between the two on the same latent (fp32). Published references for the
same config: StyleCLIP reports 98 s per optimisation edit and 72 ms per global-direction edit on a GTX 1080 Ti;
rosinality's StyleGAN2 (compiled CUDA ops, fp32) on an H100: 18.9 ms forward, 78 ms per optimisation step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import studio.generators.stylegan2 as sg2  # noqa: E402
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


def upfirdn2d_zero_insertion(x: torch.Tensor, kernel: torch.Tensor, up: int = 1,
                             pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """NVIDIA's upfirdn2d by its definition: insert up-1 zeros between samples, pad, convolve with the kernel."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [p0, p1, p0, p1])  # negative pads crop
    kh, kw = kernel.shape
    weight = kernel.to(x.dtype).flip([0, 1])[None, None].expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)


def modulated_conv_grouped(self: sg2.ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's weight (de)modulation: one modulated kernel per sample, all samples in one grouped conv."""
    b, cin, h, w = x.shape
    k = self.kernel_size
    weight = self.scale * self.weight * style.to(x.dtype).view(b, 1, cin, 1, 1)  # (B, out, in, k, k)
    weight = weight.to(x.dtype)
    if self.demodulate:
        weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8).view(b, self.out_channel, 1, 1, 1)
    x = x.reshape(1, b * cin, h, w)
    if self.upsample:
        weight = weight.transpose(1, 2).reshape(b * cin, self.out_channel, k, k)
        out = F.conv_transpose2d(x, weight, stride=2, groups=b)
        out = self.blur(out.view(b, self.out_channel, *out.shape[2:]))
    else:
        out = F.conv2d(x, weight.reshape(b * self.out_channel, cin, k, k), padding=self.padding, groups=b)
        out = out.view(b, self.out_channel, *out.shape[2:])
    return out


@contextlib.contextmanager
def formulation(name: str):
    """'ours' as shipped; 'reference' swaps in the grouped-conv modulation and zero-insertion upfirdn2d."""
    if name == "ours":
        yield
        return
    saved = sg2.ModulatedConv2d.forward, sg2.upfirdn2d
    sg2.ModulatedConv2d.forward, sg2.upfirdn2d = modulated_conv_grouped, upfirdn2d_zero_insertion
    try:
        yield
    finally:
        sg2.ModulatedConv2d.forward, sg2.upfirdn2d = saved


def measure(gen: Generator, scorer, precision: str, args: argparse.Namespace, device: torch.device,
        n_channels: int) -> list[str]:
    """One table row's timings for the formulation currently in effect."""
    pipe = StyleCLIPPipeline(gen, scorer, precision=precision)
    latent = pipe.random_latent(seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward():
        with torch.no_grad():
            pipe.render(latent)

    fwd = timeit(forward, device, warmup=1, repeat=3)
    pipe.edit(latent, "a smiling face", num_steps=2)  # warm-up
    sync(device)
    out = pipe.edit(latent, "a smiling face", num_steps=args.steps)
    sync(device)
    step_ms = 1000 * out.timings["per_step_s"]
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
    return [precision, f"{fwd:.1f}", f"{step_ms:.1f}", f"{300 * step_ms / 1000:.1f}", f"{edit_ms:.1f}",
            f"{relevance_min:.1f}", f"{jac_min:.1f}", mem]


def relevance_rates(gen: Generator, scorer, args: argparse.Namespace, device: torch.device,
                    n_channels: int) -> list[list[str]]:
    """Channel-relevance samples per minute for both methods, from one timed pass each (fp32): finite differences
    (StyleCLIP's: 2 x channels images per sample, `--relevance-batch` per pass) and the Jacobian (D rows per
    sample, `--jacobian-rows` per pass, the pipeline's default). The pass is the pipeline's own code on a
    subset (`_finite_directions` on batch/2 channels, `_jacobian_directions` with max_rows), extrapolated."""
    pipe = StyleCLIPPipeline(gen, scorer, precision="fp32")
    base = pipe._base_styles(torch.randn(1, gen.style_dim, generator=torch.Generator().manual_seed(0)))
    std = torch.ones(sum(s.shape[1] for s in base), device=device)
    channels = [c for c, a in enumerate(torch.cat([torch.full((layer.channels,), not layer.is_rgb)
                                                   for layer in gen.style_layers]).tolist()) if a]
    b, k, dim = args.relevance_batch, args.jacobian_rows, scorer.embed_dim
    pipe._finite_directions(base, channels[:1], std, 5.0, 2)  # warm-up
    finite_s = timeit(lambda: pipe._finite_directions(base, channels[:b // 2], std, 5.0, b), device,
                      warmup=0, repeat=1) / 1000
    finite_passes = 2 * n_channels / b
    with torch.enable_grad():
        jac_s = timeit(lambda: pipe._jacobian_directions(base, k, max_rows=k), device, warmup=0, repeat=1) / 1000
    jac_passes = dim / k
    rows = []
    for name, per_pass, imgs, passes in (("finite (StyleCLIP)", finite_s, b, finite_passes),
                                         ("jacobian (ours, default)", jac_s, k, jac_passes)):
        per_sample = per_pass * passes
        rows.append([name, str(imgs), f"{per_pass:.1f}", f"{passes:.0f}", f"{per_sample / 60:.1f}",
                     f"{60 / per_sample:.2g}", f"{per_sample * args.relevance_samples / 60:.0f}"])
    return rows


def measure_mapper_e4e(gen: Generator, scorer, args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    """The mapper and e4e rows (fp32), each with its reference from the same run."""
    from pipelines.styleclip_mapper import StyleCLIPMapperPipeline
    from studio.generators.e4e import E4EConfig, Encoder4Editing

    pipe = StyleCLIPMapperPipeline(gen, scorer)
    full = StyleCLIPPipeline(gen, scorer)  # the optimisation edit and inversion (the mapper pipeline runs only its own)
    rows = []
    pipe.train_mapper("a smiling face", num_steps=1, batch_size=args.mapper_batch, num_eval=1)  # warm-up
    sync(device)
    out = pipe.train_mapper("a smiling face", num_steps=args.mapper_steps, batch_size=args.mapper_batch, num_eval=1,
                            preview_every=10**4)
    sync(device)
    step_ms = 1000 * out.timings["per_step_s"]
    latent = pipe.random_latent(seed=0)
    mapper = out.mapper.to(device)

    def apply():
        with torch.no_grad():
            pipe.render(mapper.edit(latent))

    def mapper_only():
        with torch.no_grad():
            mapper.edit(latent)

    apply_ms = timeit(apply, device, warmup=1, repeat=3)
    map_ms = timeit(mapper_only, device, warmup=1, repeat=5)
    opt = full.edit(latent, "a smiling face", num_steps=max(2, args.steps // 2))
    opt_s = 300 * opt.timings["per_step_s"]
    rows.append(["mapper train step (batch %d)" % args.mapper_batch, f"{step_ms:.0f}",
                 f"StyleCLIP's 50 000 steps: {50_000 * step_ms / 3.6e6:.1f} h"])
    rows.append(["mapper apply (mapper + generator)", f"{apply_ms:.0f}",
                 f"mapper alone {map_ms:.2f} ms; 300-step latent optimisation {opt_s:.0f} s"])
    torch.manual_seed(0)
    enc = Encoder4Editing(E4EConfig(n_latent=gen.n_latent, style_dim=gen.style_dim)).to(device).eval()
    image = torch.rand(1, 3, gen.size, gen.size, generator=torch.Generator().manual_seed(0)).to(device)

    def encode():
        with torch.no_grad():
            enc.encode(image)

    enc_ms = timeit(encode, device, warmup=1, repeat=3)
    inv = full.invert(image[0].cpu(), num_steps=args.invert_steps, init="mean")
    inv_ms = 1000 * inv.timings["per_step_s"]
    rows.append(["e4e inversion (one pass)", f"{enc_ms:.0f}",
                 f"optimisation inversion {inv_ms:.0f} ms/step, 200 steps {200 * inv_ms / 1000:.0f} s"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--channel-multiplier", type=int, default=2)
    p.add_argument("--clip", default="ViT-B-32/random", help="CLIP spec; random weights by default")
    p.add_argument("--steps", type=int, default=10, help="optimisation steps timed per precision")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--formulations", default="ours,reference",
                   help="ours (as shipped) and/or reference (rosinality's formulation without its CUDA ops)")
    p.add_argument("--relevance-samples", type=int, default=100)
    p.add_argument("--skip-jacobian", action="store_true", help="skip timing one full Jacobian (slow on CPU)")
    p.add_argument("--relevance-batch", type=int, default=16)
    p.add_argument("--jacobian-rows", type=int, default=16, help="Jacobian rows per pass (relevance batch_size)")
    p.add_argument("--relevance-only", action="store_true",
                   help="only the channel-relevance rates (samples/min, jacobian vs finite differences)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 is fastest on a busy shared machine)")
    p.add_argument("--tables", default="main,mapper", help="main (generator, optimisation, global directions, "
                   "relevance) and/or mapper (latent mapper and e4e)")
    p.add_argument("--mapper-steps", type=int, default=5, help="mapper training steps timed")
    p.add_argument("--mapper-batch", type=int, default=2, help="mapper training batch (StyleCLIP: 2)")
    p.add_argument("--invert-steps", type=int, default=3, help="optimisation-inversion steps timed")
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
    headers = ["relevance method", "images / pass", "pass s", "passes / sample", "min / sample", "samples / min",
               f"{args.relevance_samples} samples (min)"]
    print("\nChannel relevance, fp32, extrapolated from one timed pass of each method:")
    print(table(headers, relevance_rates(gen, scorer, args, device, n_channels)))
    tables = args.tables.split(",")
    if args.relevance_only or "main" not in tables:
        if "mapper" in tables and not args.relevance_only:  # the mapper table alone
            print(table(["fp32", "ms", "reference (same run)"], measure_mapper_e4e(gen, scorer, args, device)))
        return
    latent0 = StyleCLIPPipeline(gen, scorer).random_latent(seed=0)
    with torch.no_grad():
        images = {}
        for form in args.formulations.split(","):
            with formulation(form):
                images[form] = gen.synthesis(gen.w_to_styles(latent0)).float()
    diff = (images["ours"] - images["reference"]).abs().max().item() if len(images) == 2 else float("nan")
    del images
    # One optimisation step of each form before any timing: on a CPU the first large allocations of a process
    # pay page faults (glibc hands big blocks back to the kernel until its mmap threshold adapts), which made
    # whichever form ran first look up to 30 % slower.
    for form in args.formulations.split(","):
        with formulation(form):
            StyleCLIPPipeline(gen, scorer).edit(latent0, "a warm-up", num_steps=1)
    rows = []
    for form in args.formulations.split(","):
        with formulation(form):
            for precision in args.precisions.split(","):
                row = measure(gen, scorer, precision, args, device, n_channels)
                rows.append([form, *row, f"{diff:.1e}" if form == "reference" else ""])
    headers = ["formulation", "precision", "generator fwd ms", "opt step ms", "300 steps s", "global edit ms",
               f"relevance {args.relevance_samples} imgs (min, est.)", "jacobian relevance (min)", "peak GiB",
               "max |ours - reference| (fp32 image)"]
    print(table(headers, rows))
    if "mapper" in tables:
        print(table(["fp32", "ms", "reference (same run)"], measure_mapper_e4e(gen, scorer, args, device)))


if __name__ == "__main__":
    main()
