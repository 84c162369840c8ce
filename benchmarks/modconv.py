"""Which form of StyleGAN2's modulated convolution is faster, with and without gradients; prints a table.

    python benchmarks/modconv.py [--device cuda] [--size 1024]

Batch 1 (where the choice is made). "kernel": the style scales the convolution kernel in every layer (the
paper's form); "activation": the style scales the input maps and demodulation the output maps around a
shared-weight conv, in every layer; "shipped": `ModulatedConv2d.forward`'s choice, layer by layer.
`studio.generators.stylegan2.ModulatedConv2d` uses the kernel form for one sample without gradients and
the activation form otherwise; this script times the two (`modulate_kernel`, `modulate_activations`) in turn on
the same generator. Forms alternate, best of `--repeats`, random config-f weights (the cost of trained ones).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import studio.generators.stylegan2 as sg2  # noqa: E402
from benchmarks.common import machine, sync, table  # noqa: E402
from studio.device import pick_device  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    gen = sg2.Generator(size=args.size, style_dim=512, n_mlp=8, channel_multiplier=2).to(device)
    gen = gen.eval().requires_grad_(False)
    w0 = gen.mean_latent(256).unsqueeze(1).repeat(1, gen.n_latent, 1)
    shipped = sg2.ModulatedConv2d.forward
    forms = {"kernel": sg2.ModulatedConv2d.modulate_kernel, "activation": sg2.ModulatedConv2d.modulate_activations,
             "shipped": shipped}

    def once(form: str, precision: str, backward: bool) -> float:
        sg2.ModulatedConv2d.forward = forms[form]
        try:
            w = w0.clone().requires_grad_(backward)
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), \
                    torch.set_grad_enabled(backward):
                img = gen.synthesis(gen.w_to_styles(w))
            if backward:
                img.float().square().mean().backward()
            sync(device)
            return (time.perf_counter() - t0) * 1000
        finally:
            sg2.ModulatedConv2d.forward = shipped

    rows = []
    for precision in ("fp32", "bf16"):
        for backward in (False, True):
            best = {f: float("inf") for f in forms}
            for _ in range(args.repeats + 1):  # the first round warms up
                for form in forms:
                    best[form] = min(best[form], once(form, precision, backward))
            k, a, c = best["kernel"], best["activation"], best["shipped"]
            rows.append([precision, "forward + backward" if backward else "forward (no grad)", f"{k:.1f}",
                         f"{a:.1f}", f"{c:.1f}", f"{min(k, a) / c:.2f}x"])
    print(f"# modulated conv forms: StyleGAN2 {args.size} config-f, batch 1, {machine(device)}")
    print(table(["precision", "pass", "kernel ms", "activation ms", "shipped choice ms",
                 "best single form / shipped"], rows))


if __name__ == "__main__":
    main()
