"""A bundled, differentiable demo generator: a latent drawn as one soft shape on a plain background.

Why this and not a tiny StyleGAN2: the offline demo CLIP (studio/demo) was trained on drawings of coloured shapes
and only knows colours, five shape kinds, positions, sizes, filled/outlined and background colours. A GAN trained
here (2 shared CPU cores, minutes) would be under-trained, and its latent space would not be organised along
those words, so a StyleCLIP edit could not be told apart from noise. This generator is honest about what it is:
a StyleGAN-shaped *parametric* model, with no stored weights (everything comes from a fixed seed), that has

* a mapping network z -> w (PixelNorm + `n_mlp` equalised linear layers, like StyleGAN's),
* a W+ latent with one entry per "layer", and per-layer affine maps A_i giving StyleSpace vectors s_i = A_i(w_i)
  (Wu et al., "StyleSpace Analysis", CVPR 2021), each channel of which controls one property,
* a synthesis that renders signed-distance fields (circle, square, triangle, star, cross) mixed by a softmax,
  with a sigmoid edge, so images are differentiable w.r.t. every latent and style channel.

It exposes the `Generator` interface the StyleCLIP pipeline uses (`get_latent`, `mean_latent`, `latent_avg`,
`n_latent`, `style_dim`, `w_to_styles`, `synthesis`, `synthesize`, `style_layers`, `make_noise`, `identity`,
and rosinality's `forward`), so latent optimisation, global directions and inversion run on it unchanged.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from studio.generators.stylegan2 import EqualLinear, PixelNorm, StyleLayer

# (layer name, channels): what each StyleSpace layer controls.
SHAPE_LAYERS: tuple[tuple[str, int], ...] = (
    ("background", 3),  # background RGB
    ("colour", 3),  # shape RGB
    ("position", 2),  # centre (x, y)
    ("size", 1),  # half-extent
    ("shape", 5),  # mixture logits over the shapes of `shape_sdfs`: circle, square, triangle, star, cross
    ("fill", 1),  # filled (high) vs outlined (low)
)


def _box(p: torch.Tensor, half: tuple[float, float]) -> torch.Tensor:
    # signed distance to an axis-aligned box (Quilez); p: (..., 2)
    d = p.abs() - p.new_tensor(half)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


def shape_sdfs(p: torch.Tensor) -> torch.Tensor:
    """Signed distances of the unit-size shapes at points p (..., 2) (x right, y down) -> (..., 5)."""
    x, y = p[..., 0], p[..., 1]
    circle = p.norm(dim=-1) - 1.0
    square = _box(p, (0.85, 0.85))
    # equilateral triangle pointing up (Quilez's sdEquilateralTriangle with y flipped, side 2 * 1.1)
    k = math.sqrt(3.0)
    tx, ty = x.abs() / 1.1 - 1.0, -y / 1.1 + 1.0 / k
    fold = tx + k * ty > 0
    tx, ty = torch.where(fold, (tx - k * ty) / 2, tx), torch.where(fold, (-k * tx - ty) / 2, ty)
    tx = tx - tx.clamp(-2.0, 0.0)
    triangle = -torch.sqrt(tx * tx + ty * ty + 1e-12) * torch.sign(ty) * 1.1
    # five-pointed star, point up: a radius modulated with the angle (a distance bound, fine for soft edges)
    theta = torch.atan2(x, -y)
    star = p.norm(dim=-1) - (0.55 + 0.45 * torch.cos(5 * theta).clamp(min=0) ** 0.6)
    cross = torch.minimum(_box(p, (0.95, 0.3)), _box(p, (0.3, 0.95)))
    return torch.stack([circle, square, triangle, star, cross], dim=-1)


class ShapesGenerator(nn.Module):
    """Parametric StyleGAN-shaped demo generator (see the module docstring). Images in [-1, 1]."""

    def __init__(self, size: int = 64, style_dim: int = 16, n_mlp: int = 2, seed: int = 0):
        super().__init__()
        if size < 16:
            raise ValueError(f"`size` must be >= 16, got {size}")
        self.size, self.style_dim, self.n_latent, self.seed = size, style_dim, len(SHAPE_LAYERS), seed
        self.log_size = int(math.log2(size))
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, activation=True)
                                                  for _ in range(n_mlp)])
        self.modulations = nn.ModuleList([EqualLinear(style_dim, c) for _, c in SHAPE_LAYERS])
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # fixed random weights from the seed: nothing is stored or trained
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) if p.ndim > 1 else torch.zeros(p.shape))
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.register_buffer("grid", (torch.stack([xs, ys], -1).float() + 0.5) / size, persistent=False)
        self.requires_grad_(False)
        # mean w, for truncation; a non-persistent buffer so it follows .to(device)
        self.register_buffer("latent_avg", self.mean_latent(4096, generator=torch.Generator().manual_seed(seed + 1)),
                             persistent=False)
        with torch.no_grad():  # centre each style on the mean w, so the average image is mid-grey, mid-size, centred
            for mod in self.modulations:
                mod.bias.copy_(-F.linear(self.latent_avg, mod.weight * mod.scale)[0] / mod.lr_mul)
        self.checkpoint_hash = hashlib.sha256(f"shapes-{size}-{style_dim}-{n_mlp}-{seed}".encode()).hexdigest()

    # -- the Generator interface -------------------------------------------------------------------------------

    @property
    def style_layers(self) -> list[StyleLayer]:
        return [StyleLayer(name, c, i, False) for i, (name, c) in enumerate(SHAPE_LAYERS)]

    @torch.no_grad()
    def mean_latent(self, n_latent: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n_latent, self.style_dim, generator=generator).to(self.grid.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def make_noise(self) -> list[torch.Tensor]:
        return []  # no per-pixel noise inputs

    def identity(self) -> str:
        return self.checkpoint_hash

    def w_to_styles(self, latent: torch.Tensor) -> list[torch.Tensor]:
        if latent.ndim != 3 or latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"`latent` must have shape (B, {self.n_latent}, {self.style_dim}), "
                             f"got {tuple(latent.shape)}")
        return [mod(latent[:, i]) for i, mod in enumerate(self.modulations)]

    def synthesis(self, styles: list[torch.Tensor], noise: list | None = None,
                  randomize_noise: bool = False) -> torch.Tensor:
        """Style vectors -> (B, 3, size, size) in [-1, 1]. `noise` is accepted for interface parity and unused."""
        if len(styles) != self.n_latent:
            raise ValueError(f"`styles` must hold {self.n_latent} tensors, got {len(styles)}")
        bg_s, fg_s, pos_s, size_s, shape_s, fill_s = styles
        bg = torch.sigmoid(2.5 * bg_s)  # (B, 3)
        fg = torch.sigmoid(2.5 * fg_s)
        centre = 0.5 + 0.3 * torch.tanh(pos_s)  # (B, 2) in [0.2, 0.8]
        radius = 0.1 + 0.2 * torch.sigmoid(1.5 * size_s)  # (B, 1)
        mix = torch.softmax(2.0 * shape_s, dim=-1)  # (B, 5)
        filled = torch.sigmoid(3.0 * fill_s)  # (B, 1)
        p = (self.grid[None] - centre[:, None, None]) / radius[:, None, None]  # (B, H, W, 2) in shape units
        sdf = (shape_sdfs(p) * mix[:, None, None]).sum(-1) * radius[:, None]  # (B, H, W) in image units
        outline = sdf.abs() - 0.12 * radius[:, None]
        sdf = filled[:, None] * sdf + (1 - filled[:, None]) * outline
        alpha = torch.sigmoid(-sdf * self.size / 0.6)[:, None]  # anti-aliased edge ~2 px wide; (B, 1, H, W)
        image = bg[:, :, None, None] * (1 - alpha) + fg[:, :, None, None] * alpha
        return image * 2 - 1

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.w_to_styles(latent))

    def forward(self, styles: list[torch.Tensor] | torch.Tensor, return_latents: bool = False,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                input_is_latent: bool = False, **_: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rosinality-style call for one style input (no mixing)."""
        s = styles[0] if isinstance(styles, (list, tuple)) else styles
        w = s if input_is_latent else self.style(s)
        if truncation < 1:
            w = (truncation_latent if truncation_latent is not None else self.latent_avg) + truncation * (
                w - (truncation_latent if truncation_latent is not None else self.latent_avg))
        latent = w if w.ndim == 3 else w.unsqueeze(1).repeat(1, self.n_latent, 1)
        image = self.synthesize(latent)
        return image, (latent if return_latents else None)
