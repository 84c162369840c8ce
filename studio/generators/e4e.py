"""e4e, "Designing an Encoder for StyleGAN Image Manipulation" (Tov et al., SIGGRAPH 2021): an image to a W+ latent
in one forward pass, in pure PyTorch with the module names of omertov/encoder4editing `models/encoders/
psp_encoders.py` (`Encoder4Editing`), so its released checkpoints (`e4e_ffhq_encode.pt`, the encoder StyleCLIP's
README points its users to for real images) load with strict key checking.

The network: a ResNet-IR backbone (`bottleneck_IR` / `bottleneck_IR_SE` units of InsightFace's ArcFace,
`models/encoders/helpers.py`; IR-SE-50 in every released e4e) whose feature maps after stages 2, 3 and 4 form a
small feature pyramid (`latlayer1`, `latlayer2`, bilinear upsample-and-add). One `GradualStyleBlock` (stride-2
convolutions down to 1 x 1, then an equalised linear layer) reads the coarsest map for w0; the others add deltas,
`w[:, i] = w0 + delta_i`: styles 1-2 from the 16 x 16 map, 3-6 from the 32 x 32 and 7+ from the 64 x 64 one (for a
256-pixel input). `latent_avg` (from the checkpoint) is added, as pSp's `start_from_latent_avg` does. Input: RGB in
[-1, 1] at `input_size` (256; e4e's transforms: resize, ToTensor, Normalize(0.5, 0.5)); faces are expected aligned
the way FFHQ is (dlib landmarks), which is not done here.

Files: `torch.load(weights_only=True)` or safetensors only. An e4e checkpoint (`{"state_dict": {"encoder.*",
"decoder.*"}, "latent_avg", "opts"}`) also holds the generator it was trained with: when it does, its mapping and
constant input must match the generator in use, or the file is refused (an encoder for another generator inverts
into the wrong latent space). `find_encoder` looks for the file: `STUDIO_E4E` (a path), else
`$STUDIO_E4E_DIR/<file>` (default `~/.cache/studio/e4e/`) for the registry generators with a known e4e release.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from studio.generators.checkpoints import CHECKPOINTS, CheckpointNotFoundError, check_strict, load_weights_only
from studio.generators.stylegan2 import EqualLinear

# The released e4e encoders for the registry's generators (omertov/encoder4editing README, "Pretrained Models").
E4E_FILES = {"ffhq-1024": "e4e_ffhq_encode.pt"}
UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}  # helpers.get_blocks
MAX_CHANNELS, MAX_UNITS, MAX_INPUT = 1024, 64, 1024  # bounds on a shape read from a file, before allocating


@dataclass(frozen=True)
class E4EConfig:
    """Encoder shape. Defaults are e4e's (IR-SE-50, 256-pixel input, 18 styles of 512 for FFHQ at 1024)."""

    n_latent: int = 18  # styles out: the generator's W+ length (2 log2(size) - 2)
    style_dim: int = 512
    units: tuple[int, ...] = UNITS[50]  # bottleneck units per stage (50 layers)
    channels: tuple[int, ...] = (64, 128, 256, 512)  # width of each stage (ArcFace's); four different widths
    se: bool = True  # squeeze-and-excitation units ('ir_se'); 'ir' without
    input_size: int = 256

    def __post_init__(self) -> None:
        if len(self.units) != 4 or len(self.channels) != 4:
            raise ValueError(f"`units` and `channels` must have four stages, got {self.units} and {self.channels}")
        for name, value, hi in (("n_latent", self.n_latent, 64), ("style_dim", self.style_dim, MAX_CHANNELS),
                                ("input_size", self.input_size, MAX_INPUT),
                                *((f"units[{i}]", u, MAX_UNITS) for i, u in enumerate(self.units)),
                                *((f"channels[{i}]", c, MAX_CHANNELS) for i, c in enumerate(self.channels))):
            if not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"`{name}` must be an integer in [1, {hi}], got {value!r}")
        if len(set(self.channels)) != 4:  # the loader finds the stages where the width changes
            raise ValueError(f"`channels` must be four different widths, got {self.channels}")
        if self.input_size < 64 or self.input_size & (self.input_size - 1):
            raise ValueError(f"`input_size` must be a power of two >= 64 (the style maps, input / 16 to input / 4, "
                             f"are pooled to 1 x 1 by stride-2 convolutions), got {self.input_size}")


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, max(1, channels // reduction), kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(max(1, channels // reduction), channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIR(nn.Module):
    """helpers.bottleneck_IR(_SE): BN-conv-PReLU-conv(stride)-BN(-SE) plus a shortcut (a 1x1 strided
    conv + BN where the width changes, else a stride-s max-pool of size 1, i.e. subsampling)."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers = [nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
                  nn.PReLU(depth), nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth)]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """psp_encoders.GradualStyleBlock: log2(spatial) stride-2 3x3 convs with LeakyReLU(0.01) to 1x1, then
    an equalised linear layer."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """e4e's encoder (see the module docstring). `forward(x)`: (B, 3, S, S) in [-1, 1] -> W+ (B, n_latent,
    style_dim), `latent_avg` included; `encode(images)` takes [0, 1] images of any size."""

    coarse_ind, middle_ind = 3, 7  # psp_encoders: styles below 3 read the 16x16 map, below 7 the 32x32 one

    def __init__(self, config: E4EConfig | None = None):
        super().__init__()
        cfg = config or E4EConfig()
        self.config = cfg
        c1, c2, c3, c4 = cfg.channels
        self.input_layer = nn.Sequential(nn.Conv2d(3, c1, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(c1),
                                         nn.PReLU(c1))
        modules, in_c = [], c1
        for depth, n in zip(cfg.channels, cfg.units):
            modules.append(BottleneckIR(in_c, depth, 2, cfg.se))
            modules += [BottleneckIR(depth, depth, 1, cfg.se) for _ in range(n - 1)]
            in_c = depth
        self.body = nn.Sequential(*modules)
        ends = [sum(cfg.units[: k + 1]) - 1 for k in range(4)]
        self.taps = (ends[1], ends[2], ends[3])  # c1, c2, c3: after stages 2, 3, 4 (6, 20, 23 for IR-50)
        self.style_count = cfg.n_latent
        s = cfg.input_size
        self.styles = nn.ModuleList(
            GradualStyleBlock(c4, cfg.style_dim, s // 16 if i < self.coarse_ind else s // 8 if i < self.middle_ind
                              else s // 4) for i in range(self.style_count))
        self.latlayer1 = nn.Conv2d(c3, c4, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(c2, c4, kernel_size=1, stride=1, padding=0)
        # pSp's start_from_latent_avg: the mean latent, added to the output; set by the loader (not a weight)
        self.register_buffer("latent_avg", torch.zeros(cfg.n_latent, cfg.style_dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        feats = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self.taps)
        w0 = self.styles[0](c3)  # (B, D)
        deltas = [torch.zeros_like(w0)]
        features, p2 = c3, None
        for i in range(1, self.style_count):
            if i == self.coarse_ind:
                p2 = features = _upsample_add(c3, self.latlayer1(c2))  # the pyramid's middle level
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))  # its fine level
            deltas.append(self.styles[i](features))
        return w0[:, None] + torch.stack(deltas, dim=1) + self.latent_avg.to(w0.dtype)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> W+ (B, n_latent, style_dim): resized to `input_size`, scaled to [-1, 1]."""
        s = self.config.input_size
        x = images.to(self.latent_avg.device, torch.float32)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return self.forward(x * 2 - 1)


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def infer_e4e_config(state: dict[str, torch.Tensor]) -> E4EConfig:
    """Encoder shape from its state dict (keys without the `encoder.` prefix); bounded before allocation.

    A stage starts where the unit width changes (64, 128, 256, 512 in every released e4e), so four stages of
    four different widths are read without any help from the file's options."""
    try:
        body = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
        widths = [int(state[f"body.{i}.res_layer.1.weight"].shape[0]) for i in body]
        n_latent = len({k.split(".")[1] for k in state if k.startswith("styles.")})
        style_dim = int(state["styles.0.linear.weight"].shape[0])
        se = "body.0.res_layer.5.fc1.weight" in state
        spatial = sum(1 for k in state if k.startswith("styles.0.convs.") and k.endswith(".weight"))
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"not an e4e encoder state dict (cannot read its shape: {err})") from None
    if not body or len(body) > 4 * MAX_UNITS or body != list(range(len(body))):
        raise ValueError(f"not an e4e encoder state dict: {len(body)} body units")
    channels, units = [], []
    for w in widths:
        if channels and channels[-1] == w:
            units[-1] += 1
        else:
            channels.append(w)
            units.append(1)
    if len(channels) != 4:
        raise ValueError(f"not an e4e encoder state dict: its body units have widths {channels}, expected four "
                         "stages of different widths (IR-50: 64, 128, 256, 512)")
    # styles.0 reads the 16 x 16 map of a 256 input: log2(input / 16) convolutions
    return E4EConfig(n_latent=n_latent, style_dim=style_dim, units=tuple(units), channels=tuple(channels),
                     se=se, input_size=16 * 2**min(spatial, 10))


def _read(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {"state_dict": load_file(str(path))}
    return load_weights_only(path, "e4e checkpoint", "e4e's dict with 'state_dict'")


def load_encoder(path: str | os.PathLike, generator: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> Encoder4Editing:
    """Build an `Encoder4Editing` from an e4e checkpoint (or a safetensors file of its `encoder.*` keys and
    `latent_avg`) and load it strictly. With `generator`, its W+ shape must match, and the generator weights an e4e
    checkpoint carries (`decoder.*`) must be the generator's own."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"e4e checkpoint not found: {str(path)!r}")
    raw = _read(path)
    full = raw.get("state_dict", raw)
    if not isinstance(full, dict):
        raise ValueError(f"{str(path)!r}: 'state_dict' is a {type(full).__name__}, expected a dict")
    state = {k.removeprefix("encoder."): v for k, v in full.items() if k.startswith("encoder.")}
    latent_avg = raw.get("latent_avg", full.get("latent_avg"))
    if not state:
        raise ValueError(f"{str(path)!r} has no 'encoder.*' weights (keys: {sorted(full)[:8]}); expected an e4e "
                         "checkpoint (omertov/encoder4editing)")
    cfg = infer_e4e_config(state)
    source = f"e4e checkpoint {str(path)!r}"
    if generator is not None and (cfg.n_latent, cfg.style_dim) != (generator.n_latent, generator.style_dim):
        raise ValueError(f"{source} encodes W+ of {cfg.n_latent} x {cfg.style_dim}; this generator takes "
                         f"{generator.n_latent} x {generator.style_dim}")
    with torch.device("meta"):  # keys and shapes first, on a storage-less encoder
        probe = Encoder4Editing(cfg)
    check_strict({k: tuple(v.shape) for k, v in probe.state_dict().items()}, state, source, "e4e's Encoder4Editing")
    model = Encoder4Editing(cfg)
    model.load_state_dict(state, strict=True)
    opts = raw.get("opts") if isinstance(raw.get("opts"), dict) else {}
    if latent_avg is not None and opts.get("start_from_latent_avg", True):
        avg = latent_avg.float().reshape(-1, cfg.style_dim)
        if avg.shape[0] not in (1, cfg.n_latent):
            raise ValueError(f"{source}: latent_avg has shape {tuple(latent_avg.shape)}, expected "
                             f"({cfg.n_latent}, {cfg.style_dim}) or ({cfg.style_dim},)")
        model.latent_avg.copy_(avg.expand(cfg.n_latent, -1))
    if generator is not None:
        check_decoder(full, generator, source)
    model.source = str(path)
    return model.to(device).eval().requires_grad_(False)


DECODER_PROBE = ("style.1.weight", "style.1.bias", "input.input")  # a generator's weights that no edit trains


def check_decoder(full: dict, generator: nn.Module, source: str,
                  advice: str = "use the e4e encoder made for this generator") -> None:
    """Refuse a checkpoint trained with another generator (e4e's, StyleCLIP's mapper's): its `decoder.*` mapping
    network and constant input (`DECODER_PROBE`) must equal the generator's, where the file has them and the
    generator has such parameters."""
    own = dict(generator.named_parameters())
    for key in DECODER_PROBE:
        theirs = full.get(f"decoder.{key}")
        if theirs is None or key not in own:
            continue
        mine = own[key].detach().float().cpu()
        if tuple(theirs.shape) != tuple(mine.shape) or not torch.allclose(theirs.float(), mine, atol=1e-5):
            raise ValueError(f"{source} was trained with another generator (its decoder's {key} differs from this "
                             f"generator's): {advice}")


def save_encoder(model: Encoder4Editing, path: str | os.PathLike) -> None:
    """Write `{"state_dict": {"encoder.*"}, "latent_avg", "opts"}` as e4e's training code does (without the
    decoder); `load_encoder` reads it back."""
    state = {f"encoder.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "latent_avg": model.latent_avg.detach().cpu(),
                "opts": {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True,
                         **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}}},
               str(path))


def encoder_dir() -> Path:
    return Path(os.environ.get("STUDIO_E4E_DIR", Path.home() / ".cache" / "studio" / "e4e"))


def find_encoder(generator: nn.Module) -> Path | None:
    """The e4e file for `generator`, if there is one here: `STUDIO_E4E` (a path), else the registry's release for
    a generator of that registry entry's shape in `encoder_dir()` (the decoder check then confirms the weights)."""
    env = os.environ.get("STUDIO_E4E")
    if env:
        if not Path(env).is_file():
            raise CheckpointNotFoundError(f"STUDIO_E4E={env!r}: no such file; {how_to_get(generator)}")
        return Path(env)
    config = getattr(generator, "config", None)
    for name, filename in E4E_FILES.items():
        if config is not None and config == CHECKPOINTS[name].config and (encoder_dir() / filename).is_file():
            return encoder_dir() / filename
    return None


def how_to_get(generator: nn.Module) -> str:
    """Where an e4e file for `generator` would go, for an error message."""
    files = ", ".join(f"{f} for {n}" for n, f in E4E_FILES.items())
    return (f"put an e4e checkpoint ({files}; links in the omertov/encoder4editing README) in "
            f"{str(encoder_dir())!r}, or set STUDIO_E4E=/path/to/e4e.pt")


__all__ = ["DECODER_PROBE", "E4EConfig", "E4E_FILES", "Encoder4Editing", "GradualStyleBlock", "encoder_dir",
           "find_encoder", "check_decoder", "how_to_get", "infer_e4e_config", "load_encoder",
           "save_encoder"]
