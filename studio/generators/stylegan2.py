"""StyleGAN2 generator in pure PyTorch with rosinality's module names (checkpoints: `studio.generators.checkpoints`).

Follows the generator of "Analyzing and Improving the Image Quality of StyleGAN" (Karras et al., CVPR 2020)
as re-implemented in rosinality/stylegan2-pytorch `model.py`, the implementation StyleCLIP (Patashnik et al.,
ICCV 2021) builds on. Module and parameter names are rosinality's, so its `.pt` files (a dict with `g_ema` and
`latent_avg`, as written by its `convert_weight.py` and `train.py`) load with strict key checking
(`studio.generators.checkpoints.load_generator`, which also holds the registry of known checkpoints). The two
custom CUDA ops are written with standard ops, so there is no compile step and it runs on any device:

* `upfirdn2d` (upsample, FIR filter, downsample) becomes a depthwise `conv_transpose2d` (upsampling) or
  `conv2d` (filtering) with the blur kernel;
* `fused_leaky_relu` becomes `leaky_relu(x + bias, 0.2) * sqrt(2)`.

The modulated convolution uses the "non-fused" formulation (scale the input by the style, convolve with the
shared weight, scale the output by the demodulation coefficients), which is the same arithmetic as the grouped
per-sample weights of the fused path (rosinality keeps both, selected by `fused`) and batches better.

Besides rosinality's `forward`, the generator exposes StyleSpace (Wu et al., CVPR 2021): `w_to_styles` maps a
W+ latent to the per-layer style vectors s = A(w) of every modulated convolution, and `synthesis` renders from
those vectors, which StyleCLIP's global directions edit.

Checked once (2026-11-27) against rosinality's mainline `model.py` (commit 7e46e47, its native CPU ops, run
outside this repository): with every parameter and noise buffer randomised, sizes 64 (cm 1) and 256 (cm 2),
the same state dict loaded strictly here gives the same image to 1.7e-13 in float64 and 5e-5 in float32, for
W+ and Z inputs, truncation and style mixing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleGAN2Config:
    """Generator shape. Defaults are StyleGAN2 config-f at 1024 (FFHQ), as in rosinality's `Generator`."""

    size: int = 1024  # output resolution, a power of two >= 8
    style_dim: int = 512  # width of z, w and the mapping network
    n_mlp: int = 8  # mapping-network layers
    channel_multiplier: int = 2  # config-f; 1 for config-e
    lr_mlp: float = 0.01  # mapping-network learning-rate multiplier (scales weights at run time)
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    max_channels: int = 512  # rosinality's channel table caps at 512; tiny test generators lower it

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"`size` must be a power of two >= 8, got {self.size}")
        for name in ("style_dim", "n_mlp", "channel_multiplier", "max_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")

    def channels(self, res: int) -> int:
        # rosinality: {4..32: 512, 64: 256*cm, 128: 128*cm, 256: 64*cm, 512: 32*cm, 1024: 16*cm}
        # == min(512, 16384 * cm / res) for every res with cm >= 1.
        return min(self.max_channels, 16384 * self.channel_multiplier // res)

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return self.log_size * 2 - 2

    @property
    def num_layers(self) -> int:
        return (self.log_size - 2) * 2 + 1


# --------------------------------------------------------------------------------------------------------------
# Standard-op replacements for rosinality's CUDA ops
# --------------------------------------------------------------------------------------------------------------


def make_kernel(k: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Separable FIR kernel, normalised to sum 1 (rosinality `make_kernel`)."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with `kernel` (true convolution), as NVIDIA's `upfirdn2d`.

    `pad` = (pad0, pad1) on both axes, as rosinality passes it. Upsampling is done in one depthwise
    `conv_transpose2d` (stride `up`), whose full output equals zero-insertion followed by the convolution; it is
    then cropped or padded to the window that `pad` selects. x: (B, C, H, W).
    """
    c = x.shape[1]
    kh, kw = kernel.shape
    p0, p1 = pad
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, kh, kw)
    if up == 1:
        x = F.pad(x, [p0, p1, p0, p1])  # negative pads crop
        return F.conv2d(x, weight.flip([2, 3]), groups=c)
    out = F.conv_transpose2d(x, weight, stride=up, groups=c)  # (B, C, (H-1)*up + kh, ...)
    # Output index i of the reference corresponds to index i + k - 1 - pad0 of the full transposed conv.
    return F.pad(out, [p0 - (kw - 1), up + p1 - kw, p0 - (kh - 1), up + p1 - kh])


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2) -> torch.Tensor:
    """rosinality `fused_leaky_relu`: (x + bias) -> leaky ReLU(0.2) -> * sqrt(2). bias: (C,) on dim 1."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), negative_slope) * SQRT2


# --------------------------------------------------------------------------------------------------------------
# Layers (names match rosinality/stylegan2-pytorch model.py)
# --------------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight * (1/sqrt(in)) * lr_mul, bias * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, kernel: tuple[int, ...], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor**2)
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, kernel: tuple[int, ...], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor**2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Weight (de)modulation (StyleGAN2 Sec. 2.2). `forward` takes the style vector s = modulation(w)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x: (B, in, H, W); style: (B, in), already mapped (s = A(w)).

        Two forms compute the same thing. Scaling the kernel costs a pass over out x in x k x k weights; scaling
        the activations costs passes over the in x H x W input and the output maps. So one sample without
        gradients (sampling, a global-direction edit) scales the kernel in the layers whose maps are larger than
        a kernel slice (H x W > out x k x k: the high-resolution ones) and the activations in the others. A batch,
        or gradients, always scales the activations: one shared-weight convolution serves every sample, and no
        per-layer weight gradient is needed. StyleGAN2-ADA likewise fuses only outside training.
        `benchmarks/modconv.py` times each form against this choice.
        """
        one_sample_no_grad = x.shape[0] == 1 and not (
            torch.is_grad_enabled() and (x.requires_grad or style.requires_grad))
        if one_sample_no_grad and x.shape[-2] * x.shape[-1] > self.out_channel * self.kernel_size**2:
            return self.modulate_kernel(x, style)
        return self.modulate_activations(x, style)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        return (self.scale * self.weight[0]).to(x.dtype)  # (out, in, k, k)

    def _convolve(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            return self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        return F.conv2d(x, weight, padding=self.padding)

    def modulate_kernel(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The style scales (and demodulation normalises) the kernel. One sample only."""
        if x.shape[0] != 1:
            raise ValueError(f"`modulate_kernel` takes one sample, got a batch of {x.shape[0]}")
        weight = self._kernel(x) * style.to(x.dtype).view(1, -1, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum([1, 2, 3]) + 1e-8).view(-1, 1, 1, 1)
        return self._convolve(x, weight)

    def modulate_activations(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The style scales the input maps and demodulation the output maps, around a shared-weight convolution."""
        b = x.shape[0]
        weight, style = self._kernel(x), style.to(x.dtype)
        x = self._convolve(x * style.view(b, -1, 1, 1), weight)
        if self.demodulate:
            # sum over (in, k, k) of (w * s)^2 = s^2 @ sum_k w^2
            x = x * torch.rsqrt(style.square() @ weight.square().sum([2, 3]).t() + 1e-8).view(b, -1, 1, 1)
        return x


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight.to(image.dtype) * noise.to(image.dtype)


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


@dataclass(frozen=True)
class StyleLayer:
    """One modulated convolution in StyleSpace: its module name, style width and W+ index."""

    name: str  # e.g. "convs.3.conv" or "to_rgbs.1.conv"
    channels: int
    latent_index: int
    is_rgb: bool


# --------------------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """rosinality's StyleGAN2 `Generator`, same submodule names and `forward` contract.

    Also: `synthesize(w_plus)` (deterministic image from W+), `w_to_styles` / `synthesis` (StyleSpace),
    `style_layers` (what each style vector is), `latent_avg` (a buffer-free attribute set by the loader),
    `checkpoint_hash` (sha256 of the file it was loaded from, else of its weights).
    """

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: tuple[int, ...] = (1, 3, 3, 1), lr_mlp: float = 0.01, max_channels: int = 512):
        super().__init__()
        cfg = StyleGAN2Config(size, style_dim, n_mlp, channel_multiplier, lr_mlp, tuple(blur_kernel), max_channels)
        self.config = cfg
        self.size, self.style_dim = size, style_dim
        self.log_size, self.num_layers, self.n_latent = cfg.log_size, cfg.num_layers, cfg.n_latent
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)]
        )
        self.channels = {2**i: cfg.channels(2**i) for i in range(2, self.log_size + 1)}
        bk = tuple(blur_kernel)
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=bk)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept because rosinality's module has it
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))
        in_channel = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=bk))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=bk))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel
        # mean w (1, style_dim) for truncation, set by the loader; non-persistent so strict loading ignores it
        self.register_buffer("latent_avg", None, persistent=False)
        self.checkpoint_hash: str | None = None
        self.checkpoint_path: str | None = None  # the file it was loaded from (set by the loader)

    # -- rosinality API ---------------------------------------------------------------------------------------

    def make_noise(self) -> list[torch.Tensor]:
        device = self.input.input.device
        noises = [torch.randn(1, 1, 4, 4, device=device)]
        for i in range(3, self.log_size + 1):
            noises += [torch.randn(1, 1, 2**i, 2**i, device=device) for _ in range(2)]
        return noises

    @torch.no_grad()
    def mean_latent(self, n_latent: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean w over `n_latent` random z, shape (1, style_dim)."""
        z = torch.randn(n_latent, self.style_dim, generator=generator).to(self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def forward(self, styles: list[torch.Tensor] | torch.Tensor, return_latents: bool = False,
                inject_index: int | None = None, truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                input_is_latent: bool = False, noise: list[torch.Tensor | None] | None = None,
                randomize_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rosinality's `Generator.forward`; note `randomize_noise` defaults to False here (stored noise).

        styles: a list of z (or w with `input_is_latent`) of shape (B, style_dim), or one W+ latent
        (B, n_latent, style_dim). Two entries mix styles at `inject_index`. Returns (image in ~[-1, 1], latent).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("`truncation_latent` is required when `truncation` < 1")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            latent = torch.cat([styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)], 1)
        image = self.synthesis(self.w_to_styles(latent), noise=noise, randomize_noise=randomize_noise)
        return image, (latent if return_latents else None)

    # -- StyleSpace -------------------------------------------------------------------------------------------

    @property
    def style_layers(self) -> list[StyleLayer]:
        """The modulated convolutions in the order `w_to_styles` returns their style vectors."""
        layers = [StyleLayer("conv1.conv", self.conv1.conv.in_channel, 0, False),
                  StyleLayer("to_rgb1.conv", self.to_rgb1.conv.in_channel, 1, True)]
        for k, to_rgb in enumerate(self.to_rgbs):
            layers += [StyleLayer(f"convs.{2 * k}.conv", self.convs[2 * k].conv.in_channel, 1 + 2 * k, False),
                       StyleLayer(f"convs.{2 * k + 1}.conv", self.convs[2 * k + 1].conv.in_channel, 2 + 2 * k, False),
                       StyleLayer(f"to_rgbs.{k}.conv", to_rgb.conv.in_channel, 3 + 2 * k, True)]
        return layers

    def _modulations(self) -> list[EqualLinear]:
        mods = [self.conv1.conv.modulation, self.to_rgb1.conv.modulation]
        for k, to_rgb in enumerate(self.to_rgbs):
            mods += [self.convs[2 * k].conv.modulation, self.convs[2 * k + 1].conv.modulation, to_rgb.conv.modulation]
        return mods

    def w_to_styles(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """W+ (B, n_latent, style_dim) -> style vectors s = A(w), one (B, C_i) per entry of `style_layers`."""
        if latent.ndim != 3 or latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"`latent` must have shape (B, {self.n_latent}, {self.style_dim}), "
                             f"got {tuple(latent.shape)}")
        return [mod(latent[:, layer.latent_index]) for mod, layer in zip(self._modulations(), self.style_layers)]

    def synthesis(self, styles: list[torch.Tensor], noise: list[torch.Tensor | None] | None = None,
                  randomize_noise: bool = False) -> torch.Tensor:
        """Render from StyleSpace vectors (as `w_to_styles` returns). Returns (B, 3, size, size) in ~[-1, 1]."""
        if len(styles) != len(self._modulations()):
            raise ValueError(f"`styles` must hold {len(self._modulations())} tensors, got {len(styles)}")
        if noise is None:
            noise = ([None] * self.num_layers if randomize_noise
                     else [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])
        b = styles[0].shape[0]
        dtype = styles[0].dtype
        out = self.input(b).to(dtype)
        out = self.conv1(out, styles[0], noise=noise[0])
        skip = self.to_rgb1(out, styles[1])
        for k, to_rgb in enumerate(self.to_rgbs):
            s_a, s_b, s_rgb = styles[2 + 3 * k: 5 + 3 * k]
            out = self.convs[2 * k](out, s_a, noise=noise[1 + 2 * k])
            out = self.convs[2 * k + 1](out, s_b, noise=noise[2 + 2 * k])
            skip = to_rgb(out, s_rgb, skip)
        return skip

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """W+ latent (B, n_latent, style_dim) -> image (B, 3, size, size) in ~[-1, 1], stored noise."""
        return self.synthesis(self.w_to_styles(latent))

    def identity(self) -> str:
        """A stable id for caches: the checkpoint's sha256 if loaded from a file, else a hash of the weights."""
        if self.checkpoint_hash is None:
            self.checkpoint_hash = state_dict_hash(self.state_dict())
        return self.checkpoint_hash


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


__all__ = ["EqualLinear", "Generator", "ModulatedConv2d", "PixelNorm", "StyleGAN2Config", "StyleLayer", "make_kernel",
           "state_dict_hash", "upfirdn2d"]
