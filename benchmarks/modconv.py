"""Which form of StyleGAN2's modulated convolution is faster, with and without gradients; prints a table.

    python benchmarks/modconv.py [--device cuda] [--size 1024] [--batch 1]

"kernel": the style scales the convolution kernel (the paper's form; one sample, or rosinality's grouped conv);
"activation": the style scales the input maps and demodulation the output maps, one shared-weight conv for the
batch. `studio.generators.stylegan2.ModulatedConv2d` uses the kernel form for one sample without gradients and
the activation form otherwise; this script is the measurement behind that choice. Forms alternate, best of
`--repeats`, random config-f weights (the cost of trained ones).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import studio.generators.stylegan2 as sg2  # noqa: E402
from benchmarks.common import machine, sync, table  # noqa: E402
from benchmarks.styleclip import modulated_conv_grouped  # noqa: E402
from studio.device import pick_device  # noqa: E402


def activation_form(self: sg2.ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    weight = (self.scale * self.weight[0]).to(x.dtype)
    style = style.to(x.dtype)
    x = x * style.view(b, -1, 1, 1)
    if self.upsample:
        x = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
    else:
        x = F.conv2d(x, weight, padding=self.padding)
    if self.demodulate:
        x = x * torch.rsqrt(style.square() @ weight.square().sum([2, 3]).t() + 1e-8).view(b, -1, 1, 1)
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    gen = sg2.Generator(size=args.size, style_dim=512, n_mlp=8, channel_multiplier=2).to(device)
    gen = gen.eval().requires_grad_(False)
    w0 = gen.mean_latent(256).unsqueeze(1).repeat(args.batch, gen.n_latent, 1)
    forms = {"kernel": modulated_conv_grouped, "activation": activation_form}
    shipped = sg2.ModulatedConv2d.forward

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
            k, a = best["kernel"], best["activation"]
            rows.append([precision, "forward + backward" if backward else "forward (no grad)", f"{k:.1f}",
                         f"{a:.1f}", f"{a / k:.2f}x"])
    print(f"# modulated conv forms: StyleGAN2 {args.size} config-f, batch {args.batch}, {machine(device)}")
    print(table(["precision", "pass", "kernel ms", "activation ms", "activation / kernel"], rows))


if __name__ == "__main__":
    main()
