"""StyleCLIP's latent mapper (Patashnik et al., ICCV 2021, Sec. 5): a network trained for one text prompt that edits
any W+ latent in one forward pass (tasks `styleclip-mapper`, training, and `styleclip-mapper-apply`).

After orpatashnik/StyleCLIP `mapper/`: `LatentMapper` is its `LevelsMapper`, three MLPs for the coarse (W+ entries
0-3), medium (4-7) and fine (8+) groups, each PixelNorm and four equalised linear layers with leaky ReLU (lr_mul
0.01; `latent_mappers.Mapper`), any of which can be left out (`--no_coarse_mapper`, ...). The edit is
w_hat = w + 0.1 M(w) (`training/coach.py`); here w + strength 0.1 M(w), so strength 1 is StyleCLIP's edit and 0 the
start. PixelNorm is StyleCLIP's: on a (B, k, 512) group it normalises over dim 1, the group's k entries (so on a
W latent, where they are equal, each mapper reads the sign of w); kept as the paper's code has it.

Training (`iter_train_mapper`, coach.py): the loss is clip_weight (1 - cos(E_I(G(w_hat)), E_T(prompt))) + l2_weight
mean (w_hat - w)^2 + id_weight identity, on batches of latents sampled from the generator (no dataset: StyleCLIP's
coach without a latents file draws z and maps it with truncation 0.7). StyleCLIP's identity term is ArcFace, which
only knows faces; here it is the any-domain one the latent optimisation uses: 1 - cos between the CLIP image
embeddings (the scorer's image tower) of the edit and of the start. StyleCLIP trains with Ranger; its `--optim_name
adam` (Adam, same learning rate 0.5) is what runs here. Held-out latents (drawn before the training ones from the
same seeded stream, so never trained on) give the result's scores and previews. Stop keeps the mapper trained so
far. `save` writes `styleclip-mapper.safetensors` with the prompt, the generator's hash and the settings in its
metadata; `load_mapper` reads it back, checking every key and shape, and the pipeline refuses a mapper trained for
another generator.

StyleCLIP's own checkpoints (its published pretrained mappers for FFHQ, `afro.pt`, `bobcut.pt`, `purple_hair.pt`,
...) load too, wherever a mapper file is taken: `read_styleclip_mapper` reads one with `torch.load(weights_only=True)`
(no code from the file runs), checks its keys and shapes strictly against this `LatentMapper` (the same
parameterisation, so the same edit), keeps its prompt (`opts["description"]`) and a few of the generator weights it
carries (to refuse another generator), and `convert_styleclip_mapper` writes it once as our safetensors file in the
cache (`$STUDIO_CACHE/styleclip/mappers`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.registry import register
from pipelines.styleclip_core import EditOutput, StartConfig, StyleCLIPTaskPipeline, cap_frames, default_cache_dir
from studio.generators.stylegan2 import EqualLinear, PixelNorm
from studio.images import to_pil, to_uint8
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve, run_settings

# (group, first W+ entry, end): StyleCLIP LevelsMapper's x[:, :4], x[:, 4:8], x[:, 8:]
GROUPS: tuple[tuple[str, int, int | None], ...] = (("coarse", 0, 4), ("medium", 4, 8), ("fine", 8, None))
MODULES = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}  # StyleCLIP's names
EDIT_SCALE = 0.1  # w_hat = w + 0.1 M(w) (StyleCLIP coach.py)
FORMAT = "studio-styleclip-mapper/1"
MAX_STYLE_DIM, MAX_N_LATENT = 1024, 64  # bounds on a shape read from a file, before anything is allocated
PREVIEW_COLUMNS = 4  # held-out latents shown in the previews and the result image


# ----------------------------------------------------------------------------------------------------------------
# The network and its file
# ----------------------------------------------------------------------------------------------------------------


class MapperLinear(EqualLinear):
    """EqualLinear with fused leaky ReLU on a (B, k, D) group: the bias is added on the last axis, as StyleCLIP's
    `fused_leaky_relu` does for 3-D inputs (the generator's version adds it on axis 1, the channels of a map)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.linear(x, self.weight * self.scale, self.bias * self.lr_mul), 0.2) * math.sqrt(2.0)


class Mapper(nn.Module):
    """StyleCLIP `latent_mappers.Mapper`: PixelNorm, then four EqualLinear(D, D, lr_mul=0.01) with fused leaky ReLU."""

    def __init__(self, style_dim: int):
        super().__init__()
        self.mapping = nn.Sequential(PixelNorm(), *[MapperLinear(style_dim, style_dim, lr_mul=0.01, activation=True)
                                                    for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mapping(x)


class LatentMapper(nn.Module):
    """StyleCLIP's `LevelsMapper` for a generator with `n_latent` W+ entries of `style_dim`: `forward(w)` gives the
    move M(w) (B, n_latent, D), zero in a group without a mapper; `edit(w, strength)` = w + strength 0.1 M(w).

    `prompt`, `generator_hash` and `settings` say what it was trained for (set by training and by `load_mapper`)."""

    def __init__(self, n_latent: int, style_dim: int, groups: tuple[str, ...] = ("coarse", "medium", "fine")):
        super().__init__()
        for name, value, hi in (("n_latent", n_latent, MAX_N_LATENT), ("style_dim", style_dim, MAX_STYLE_DIM)):
            if not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"`{name}` must be an integer in [1, {hi}], got {value!r}")
        unknown = sorted(set(groups) - set(MODULES))
        if unknown:
            raise ValueError(f"`groups` must be among {list(MODULES)}, got {unknown}")
        self.n_latent, self.style_dim = n_latent, style_dim
        # a group past the generator's last entry (fine on a 64-px generator) has nothing to map
        self.groups = tuple(name for name, lo, _ in GROUPS if name in groups and lo < n_latent)
        if not self.groups:
            raise ValueError(f"`groups` leaves no mapper for a W+ of {n_latent} entries (groups {list(groups)})")
        for name in self.groups:
            setattr(self, MODULES[name], Mapper(style_dim))
        self.prompt: str = ""
        self.generator_hash: str | None = None
        self.settings: dict[str, Any] = {}
        # a StyleCLIP checkpoint's own generator weights (`DECODER_PROBE`, keys without "decoder."): the generator
        # it was trained with, which the generator in use must match (`check_generator`); empty for ours
        self.decoder_probe: dict[str, torch.Tensor] = {}

    def reset_parameters(self, seed: int) -> LatentMapper:
        """EqualLinear's initialisation (weights N(0, 1) / lr_mul, biases 0) drawn from `seed`."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, EqualLinear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.lr_mul)
                    module.bias.zero_()
        return self

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"`latent` must have shape (B, {self.n_latent}, {self.style_dim}), got {tuple(w.shape)}")
        parts = []
        for name, lo, hi in GROUPS:
            x = w[:, lo:hi]
            if x.shape[1]:
                parts.append(getattr(self, MODULES[name])(x) if name in self.groups else torch.zeros_like(x))
        return torch.cat(parts, dim=1)

    def edit(self, w: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        return w + strength * EDIT_SCALE * self(w)

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "prompt": self.prompt, "generator_hash": self.generator_hash or "",
                "n_latent": str(self.n_latent), "style_dim": str(self.style_dim), "groups": ",".join(self.groups),
                "settings": json.dumps(self.settings, sort_keys=True)}


def save_mapper(mapper: LatentMapper, path: str | os.PathLike) -> Path:
    """Write `mapper` as safetensors, its prompt, generator hash and settings in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
    tensors.update({f"decoder.{k}": v.detach().cpu().contiguous() for k, v in mapper.decoder_probe.items()})
    save_file(tensors, str(path), metadata=mapper.metadata())
    return path


def load_mapper(path: str | os.PathLike, generator: nn.Module | None = None,
                cache_dir: str | os.PathLike | None = None) -> LatentMapper:
    """Read a mapper written by `save_mapper`, or one of StyleCLIP's own `.pt` checkpoints (its published
    pretrained mappers: converted once by `convert_styleclip_mapper` into `cache_dir`, then read from there).
    Every key and shape is checked (from the file's header, before any tensor is read) against the mapper its
    metadata describes; with `generator`, its W+ shape and hash (or, for StyleCLIP's files, the generator weights
    the checkpoint carries) must be the ones the mapper was trained for."""
    from safetensors import safe_open

    from studio.generators.checkpoints import check_strict
    from studio.generators.e4e import DECODER_PROBE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mapper file not found: {str(path)!r}")
    if path.suffix in STYLECLIP_SUFFIXES:
        path = convert_styleclip_mapper(path, generator, cache_dir=cache_dir)
    source = f"mapper file {path.name!r}"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError (not exported by every version)
        raise ValueError(f"{source} is not a safetensors file: {err}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{source} is not a StyleCLIP mapper written by this studio (metadata format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        n_latent, style_dim = int(meta["n_latent"]), int(meta["style_dim"])
        groups = tuple(g for g in meta["groups"].split(",") if g)
        settings = json.loads(meta.get("settings") or "{}")
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source} has broken metadata ({type(err).__name__}: {err})") from None
    if generator is not None and (n_latent, style_dim) != (generator.n_latent, generator.style_dim):
        raise ValueError(f"{source} maps W+ of {n_latent} x {style_dim}; this generator has {generator.n_latent} x "
                         f"{generator.style_dim}")
    decoder = {k: shapes.pop(k) for k in [f"decoder.{k}" for k in DECODER_PROBE] if k in shapes}
    with torch.device("meta"):
        probe = LatentMapper(n_latent, style_dim, groups)
    check_strict({k: tuple(v.shape) for k, v in probe.state_dict().items()}, shapes, source,
                 f"a StyleCLIP mapper for W+ {n_latent} x {style_dim} with groups {list(groups)}")
    if any(math.prod(shape) > MAX_STYLE_DIM * MAX_STYLE_DIM for shape in decoder.values()):
        raise ValueError(f"{source}: its generator weights {sorted(decoder)} are larger than a StyleGAN2's")
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    mapper = LatentMapper(n_latent, style_dim, groups)
    mapper.decoder_probe = {k.removeprefix("decoder."): tensors.pop(k).float() for k in decoder}
    mapper.load_state_dict(tensors, strict=True)
    mapper.prompt, mapper.generator_hash = meta.get("prompt", ""), meta.get("generator_hash") or None
    mapper.settings = settings if isinstance(settings, dict) else {}
    if generator is not None:
        check_generator(mapper, generator, source)
    return mapper.eval().requires_grad_(False)


def check_generator(mapper: LatentMapper, generator: nn.Module, source: str = "the mapper") -> None:
    """Refuse a mapper trained for another generator: its recorded hash is not the generator's `identity()`, or
    (StyleCLIP's checkpoints, which carry their generator) the generator's mapping network and constant input are
    not the checkpoint's."""
    from studio.generators.e4e import check_decoder

    if (mapper.n_latent, mapper.style_dim) != (generator.n_latent, generator.style_dim):
        raise ValueError(f"{source} maps W+ of {mapper.n_latent} x {mapper.style_dim}; this generator has "
                         f"{generator.n_latent} x {generator.style_dim}")
    if mapper.generator_hash and mapper.generator_hash != generator.identity():
        raise ValueError(f"{source} was trained for another generator (hash {mapper.generator_hash[:12]}…, this "
                         f"one is {generator.identity()[:12]}…): train a mapper for this generator")
    if mapper.decoder_probe:
        check_decoder({f"decoder.{k}": v for k, v in mapper.decoder_probe.items()}, generator, source,
                      "a StyleCLIP mapper edits only the generator it was trained with (StyleCLIP's published "
                      "mappers: FFHQ config-f at 1024, `ffhq-1024`)")


# ----------------------------------------------------------------------------------------------------------------
# StyleCLIP's own checkpoints
# ----------------------------------------------------------------------------------------------------------------

STYLECLIP_SUFFIXES = (".pt", ".pth")
MAX_STYLECLIP_BYTES = 1 << 30  # a published FFHQ mapper, generator included, is ~145 MB
MAX_CONVERTED = 16  # converted mappers kept in the cache, the least recently used dropped first
# StyleCLIP's training options worth keeping with a converted mapper (mapper/options/train_options.py)
STYLECLIP_OPTS = ("description", "mapper_type", "no_coarse_mapper", "no_medium_mapper", "no_fine_mapper",
                  "learning_rate", "optim_name", "clip_lambda", "latent_l2_lambda", "id_lambda", "batch_size",
                  "max_steps", "stylegan_size", "work_in_stylespace")


def _plain(value: object) -> bool:
    """A value of a mapper file's opts that is copied into the settings: a scalar or a short string, never a
    container (the file is untrusted; its opts are kept for the record only)."""
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 200)


def read_styleclip_mapper(path: str | os.PathLike, n_latent: int | None = None) -> LatentMapper:
    """A `LatentMapper` from one of StyleCLIP's own mapper checkpoints, read without running any code from it.

    The file is what orpatashnik/StyleCLIP `mapper/training/coach.py` saves: `{"state_dict":
    StyleCLIPMapper.state_dict(), "opts": vars(opts)}` (its published pretrained mappers, `afro.pt`, `bobcut.pt`,
    `purple_hair.pt`, ..., are such files), read with `torch.load(weights_only=True)`: tensors and plain values
    only. `state_dict` holds the `LevelsMapper` as `mapper.course_mapping.mapping.{1-4}.{weight,bias}` (and
    `medium_mapping`, `fine_mapping`; a group trained with `--no_*_mapper` is absent) and the generator it was
    trained with as `decoder.*`, of which only `DECODER_PROBE` is kept (to refuse another generator later). Our
    `LatentMapper` has StyleCLIP's parameterisation (PixelNorm, EqualLinear with lr_mul 0.01 and fused leaky ReLU,
    the edit w + 0.1 M(w)), so the weights are used as they are. The prompt is `opts["description"]`.

    `n_latent`: the W+ length of the generator it will edit (the weights do not depend on it); default from
    `opts["stylegan_size"]` (2 log2(size) - 2: 18 at 1024). Refused, naming what was expected: a file that is not
    such a dict, one whose unpickling would import anything (nothing from it runs), one over `MAX_STYLECLIP_BYTES`
    on disk or unpacked, one in torch's legacy (pre-1.6) format (StyleCLIP's setup installs torch 1.7.1, which
    writes the zip format; a legacy file would have to be unpickled to learn its tensor sizes), a `SingleMapper`
    or StyleSpace mapper, and any missing, unexpected or mis-shaped key."""
    from studio.generators.checkpoints import check_strict, load_weights_only
    from studio.generators.e4e import DECODER_PROBE
    from studio.progress import json_safe
    from studio.safe_pickle import describe, describe_keys

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleCLIP mapper checkpoint not found: {str(path)!r}")
    source = f"StyleCLIP mapper checkpoint {path.name!r}"
    expected = "StyleCLIP's {'state_dict': StyleCLIPMapper.state_dict(), 'opts': vars(opts)}"
    raw = load_weights_only(path, "StyleCLIP mapper checkpoint", expected, max_bytes=MAX_STYLECLIP_BYTES,
                            zip_only=True)
    state, opts = raw.get("state_dict"), raw.get("opts")
    opts = vars(opts) if isinstance(opts, argparse.Namespace) else opts if isinstance(opts, dict) else {}
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{source} has no 'state_dict' of tensors (keys: {describe_keys(raw)}); expected "
                         f"{expected}")
    mapper_type = opts.get("mapper_type", "LevelsMapper")
    if any(k.startswith("mapper.mapping.") for k in state):  # SingleMapper's one MLP over all of W+
        mapper_type = "SingleMapper"
    if mapper_type != "LevelsMapper":
        raise ValueError(f"{source} is a StyleCLIP {describe(mapper_type)}; only its 'LevelsMapper' (coarse, medium "
                         "and fine mappers, the published ones) is supported")
    if opts.get("work_in_stylespace"):
        raise ValueError(f"{source} was trained in StyleSpace (opts work_in_stylespace); only W+ mappers "
                         "(StyleCLIP's default, the published ones) are supported")
    weights = {k.removeprefix("mapper."): v for k, v in state.items() if k.startswith("mapper.")}
    others = sorted(k for k in state if not k.startswith(("mapper.", "decoder.")))
    groups = tuple(name for name in MODULES if f"{MODULES[name]}.mapping.1.weight" in weights)
    if not groups:
        raise ValueError(f"{source} has no mapper weights ('mapper.course_mapping.mapping.1.weight', "
                         f"'mapper.medium_mapping...', 'mapper.fine_mapping...'); keys: {describe_keys(state)}")
    key = f"{MODULES[groups[0]]}.mapping.1.weight"
    if weights[key].ndim != 2:
        raise ValueError(f"{source}: mapper.{key} has shape {tuple(weights[key].shape)}, expected (D, D)")
    style_dim = int(weights[key].shape[-1])
    if n_latent is None:
        size_opt = opts.get("stylegan_size")
        if not isinstance(size_opt, int) or size_opt < 4 or size_opt & (size_opt - 1):
            raise ValueError(f"{source}: its opts name no stylegan_size (got {describe(size_opt)}); give the generator "
                             "it edits (n_latent)")
        n_latent = 2 * int(math.log2(size_opt)) - 2
    what = (f"StyleCLIP's LevelsMapper for W+ {n_latent} x {style_dim} with groups {list(groups)} (keys "
            "mapper.<course|medium|fine>_mapping.mapping.<1-4>.<weight (D, D)|bias (D,)>, plus decoder.*)")
    with torch.device("meta"):
        probe = LatentMapper(n_latent, style_dim, groups)  # refuses a style_dim or n_latent out of bounds
    own = {f"mapper.{k}": tuple(v.shape) for k, v in probe.state_dict().items()}
    check_strict(own, {**{f"mapper.{k}": v for k, v in weights.items()}, **{k: state[k] for k in others}},
                 source, what)
    mapper = LatentMapper(n_latent, style_dim, groups)
    mapper.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    mapper.decoder_probe = {k: state[f"decoder.{k}"].float().clone() for k in DECODER_PROBE
                            if f"decoder.{k}" in state}
    description = opts.get("description")
    mapper.prompt = description if isinstance(description, str) else ""
    kept = {k: opts[k] for k in STYLECLIP_OPTS if k in opts and _plain(opts[k])}
    mapper.settings = {"prompt": mapper.prompt, "converted_from": path.name, "styleclip_opts": json_safe(kept)}
    return mapper.eval().requires_grad_(False)


def converted_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted StyleCLIP mappers are kept: `<cache_dir>/mappers` (default `$STUDIO_CACHE/styleclip`)."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "mappers"


def convert_styleclip_mapper(path: str | os.PathLike, generator: nn.Module | None = None, *,
                             n_latent: int | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A StyleCLIP mapper checkpoint -> our `.safetensors` mapper file (`read_styleclip_mapper`, then `save_mapper`),
    converted once: the file is named by the checkpoint's sha256 and the W+ length (`generator.n_latent`, else
    `n_latent`, else from its opts) in `converted_dir(cache_dir)`, and the next load reads it with no pickle at
    all. With `generator`, a mapper it cannot use (`check_generator`) is refused before anything is written. At
    most `MAX_CONVERTED` files are kept, the least recently used dropped first."""
    import re
    import threading

    from studio.generators.checkpoints import file_hash

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleCLIP mapper checkpoint not found: {str(path)!r}")
    folder = converted_dir(cache_dir)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:40] or "mapper"
    if generator is not None:
        n_latent = generator.n_latent
    digest = file_hash(path)
    tag = f"-w{n_latent}" if n_latent is not None else ""
    out = folder / f"{stem}-{digest[:16]}{tag}.safetensors"
    if out.is_file():
        os.utime(out)  # recently used: kept longest
        return out
    mapper = read_styleclip_mapper(path, n_latent)
    if generator is not None:
        check_generator(mapper, generator, f"StyleCLIP mapper checkpoint {path.name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
    save_mapper(mapper, tmp)
    os.replace(tmp, out)
    kept = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[MAX_CONVERTED:]:
        old.unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Settings and results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MapperConfig:
    """Settings of one mapper training; the defaults are StyleCLIP `mapper/options/train_options.py`'s except where
    marked ours."""

    num_steps: int = param(50_000, 1, 200_000, ui=(10, 50_000), step=10, cpu=200,
                           label="Training steps (StyleCLIP: 50 000)",
                           help="training steps; StyleCLIP --max_steps 50000 (Stop keeps the mapper so far)")
    batch_size: int = param(2, 1, 64, ui=(1, 16), label="Batch", help="latents per step; StyleCLIP --batch_size 2")
    lr: float = param(0.5, 1e-6, 10.0, control=False,
                      help="Adam's learning rate; StyleCLIP --learning_rate 0.5 (its default optimiser is Ranger; "
                           "--optim_name adam is what runs here)")
    clip_weight: float = param(1.0, 0.0, 1e3, control=False, help="weight of the CLIP loss; StyleCLIP --clip_lambda 1")
    l2_weight: float = param(0.8, 0.0, 1e3, ui=(0.0, 2.0), step=0.05, label="L2 weight (stay near the start)",
                             help="weight of mean (w_hat - w)^2; StyleCLIP --latent_l2_lambda 0.8")
    id_weight: float = param(0.1, 0.0, 1e3, ui=(0.0, 1.0), step=0.05,
                             label="Identity weight (CLIP similarity to the start)",
                             help="weight of 1 - cos between the CLIP image embeddings of edit and start (any "
                                  "domain); StyleCLIP --id_lambda 0.1, there on ArcFace (faces only)")
    coarse: bool = param(True, control=False, help="train the coarse mapper (W+ 0-3); StyleCLIP --no_coarse_mapper")
    medium: bool = param(True, control=False, help="train the medium mapper (W+ 4-7); StyleCLIP --no_medium_mapper")
    fine: bool = param(True, control=False, help="train the fine mapper (W+ 8+); StyleCLIP --no_fine_mapper")
    truncation: float = param(0.7, 0.0, 1.0, step=0.05, label="Truncation",
                              help="the training latents: w = mean + truncation (w - mean) of random z; StyleCLIP's "
                                   "coach without a latents file: truncation 0.7")
    num_eval: int = param(8, 1, 256, control=False,
                          help="held-out latents the result is scored on; ours: 8 (StyleCLIP validates on 1000)")
    seed: int = param(0, 0, SEED_MAX, label="Seed", help="the mapper's initial weights, the training and the "
                                                         "held-out latents")
    preview_every: int = param(10, 1, 10_000, control=False,
                               help="steps between previews and video frames; ours: 10 (StyleCLIP logs every 100)")


@dataclass
class MapperApplyConfig(StartConfig):
    """Settings of one mapper edit: the start (`StartConfig`) and the strength."""

    strength: float = param(1.0, 0.0, 2.0, step=0.05, label="Strength",
                            help="w + strength 0.1 M(w): 1 is StyleCLIP's mapper edit, 0 the start, above 1 an "
                                 "extrapolation")


@dataclass
class MapperTrainOutput(Result):
    """A trained mapper. `mapper` (a `LatentMapper` on the CPU, with its prompt and generator hash); `image`: held-out
    latents, starts above and edits below; `frames` the same at every preview. scores: eval_clip_loss_before /
    eval_clip_loss (mean 1 - cos for the prompt over the `num_eval` held-out latents, start / edit), clip_score_before
    / clip_score (their mean CLIPScore), and the last step's loss, clip_loss, l2 and id. `save` also writes
    `styleclip-mapper.safetensors` (kind "mapper")."""

    task = "styleclip-mapper"
    mapper: LatentMapper | None = None
    prompt: str = ""
    generator_hash: str = ""
    losses: list[float] = field(default_factory=list)
    clip_losses: list[float] = field(default_factory=list)
    l2_distances: list[float] = field(default_factory=list)
    id_losses: list[float] = field(default_factory=list)

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        paths = super().save(folder, video=video, fps=fps)
        paths["mapper"] = save_mapper(self.mapper, paths["png"].parent / f"{self.task}.safetensors")
        return paths


@dataclass
class MapperEditOutput(EditOutput):
    """A mapper edit (`EditOutput`'s fields: `image` / `original` the edit at `strength` / the start, `latent` /
    `start_latent`, `prompt` the mapper's). scores: clip_score and clip_score_before for the mapper's prompt."""

    task = "styleclip-mapper-apply"


# ----------------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------------


class StyleCLIPMapperPipeline(StyleCLIPTaskPipeline):
    """StyleCLIP's latent mapper on a StyleCLIP session: `train_mapper` / `iter_train_mapper` and `apply_mapper` /
    `iter_apply_mapper`. `mapper`: the mapper `apply_mapper` uses when none is given (`load_mapper`);
    `mapper_config` / `mapper_apply_config`: the defaults. On another pipeline's session with `from_pipe` (shared:
    the same generator, CLIP, encoder and caches).

    >>> pipe = StyleCLIPMapperPipeline.from_pretrained("demo-shapes")  # doctest: +SKIP
    >>> out = pipe.train_mapper("a red circle", num_steps=200, seed=0)  # doctest: +SKIP
    >>> out.save("red/")  # styleclip-mapper.png, .mp4, .safetensors  # doctest: +SKIP
    >>> pipe.apply_mapper(None, "red/styleclip-mapper.safetensors", seed=5, strength=0.7).image  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mapper_config = MapperConfig()
        self.mapper_apply_config = MapperApplyConfig()
        self.mapper: LatentMapper | None = None

    @classmethod
    def of(cls, pipe: Any) -> StyleCLIPMapperPipeline:
        """`from_pipe` (the name callers used before the session was shared)."""
        return cls.from_pipe(pipe)

    def load_mapper(self, mapper: Any) -> LatentMapper:
        """A mapper for this generator from a `LatentMapper`, a `MapperTrainOutput`, a `.safetensors` path or one of
        StyleCLIP's own `.pt` checkpoints (its published mappers: converted once into `cache_dir/mappers`); refused
        when trained for another generator. It becomes the default of `apply_mapper`. Returns it."""
        self.mapper = self._mapper(mapper)
        return self.mapper

    def _mapper(self, mapper: Any) -> LatentMapper:
        if mapper is None:
            if self.mapper is None:
                raise ValueError("`mapper` is missing: train one (task styleclip-mapper) and pass it or its "
                                 ".safetensors file (command line: --mapper FILE)")
            return self.mapper
        if isinstance(mapper, MapperTrainOutput):
            mapper = mapper.mapper
        if isinstance(mapper, (str, os.PathLike)):
            mapper = load_mapper(mapper, self.session.generator, cache_dir=self.session.cache_dir)
        if not isinstance(mapper, LatentMapper):
            raise ValueError(f"`mapper` must be a LatentMapper, a trained mapper's result, a .safetensors path or "
                             f"a StyleCLIP .pt checkpoint, got {type(mapper).__name__}")
        check_generator(mapper, self.session.generator)
        return mapper.to(self.session.device).eval()

    def _sample_w_plus(self, n: int, truncation: float, gen: torch.Generator) -> torch.Tensor:
        """(n, n_latent, D) W+ of random z, truncated towards the mean w (StyleCLIP's coach: truncation 0.7)."""
        g = self.session.generator
        z = torch.randn(n, g.style_dim, generator=gen).to(self.session.device)
        avg = self.session.latent_avg()
        w = avg + truncation * (g.get_latent(z) - avg)
        return w.unsqueeze(1).repeat(1, g.n_latent, 1)

    def _render_batched(self, w: torch.Tensor, chunk: int = 4) -> torch.Tensor:
        return torch.cat([self.session.render(part) for part in w.split(chunk)])

    # -- training ---------------------------------------------------------------------------------------------

    def iter_train_mapper(self, prompt: str = "", **settings: Any) -> Iterator[Progress | MapperTrainOutput]:
        """Train a latent mapper for `prompt` (StyleCLIP method 2). settings: any `MapperConfig` field. Yields a
        `Progress` every step (a preview of held-out latents, start over edit, every `preview_every`), then the
        `MapperTrainOutput`; "stop" ends it with the mapper trained so far."""
        t0 = time.perf_counter()
        # 1. check inputs
        prompt = check_text(prompt, "prompt")
        cfg = resolve(self.mapper_config, settings)
        groups = tuple(name for name in MODULES if getattr(cfg, name))
        g = self.session.generator
        if not any(lo < g.n_latent for name, lo, _ in GROUPS if name in groups):
            raise ValueError(f"`coarse`, `medium` and `fine` leave no mapper to train for this generator's "
                             f"{g.n_latent} W+ entries (got {list(groups) or 'none'})")
        total = cfg.num_steps

        with oom_guard("StyleCLIP mapper training"):
            # 2. the mapper, the prompt, and held-out latents drawn first from the seeded stream
            mapper = LatentMapper(g.n_latent, g.style_dim, groups).reset_parameters(cfg.seed).to(self.session.device)
            mapper.train().requires_grad_(True)
            gen = torch.Generator().manual_seed(cfg.seed)
            text = self.session.scorer.encode_text([prompt]).to(self.session.device)  # (1, D)
            with torch.no_grad():
                w_eval = self._sample_w_plus(cfg.num_eval, cfg.truncation, gen)
                eval_start = self._render_batched(w_eval)
                eval_emb0 = torch.cat([self.session.clip_embed(x) for x in eval_start.split(4)])
            shown = w_eval[:PREVIEW_COLUMNS]
            starts = self.session.to_unit(eval_start[:PREVIEW_COLUMNS])
            optimizer = torch.optim.Adam(mapper.parameters(), lr=cfg.lr)

            def grid() -> torch.Tensor:  # (1, 3, 2H, kW): held-out starts above, their edits below
                with torch.no_grad():
                    edits = self.session.to_unit(self.session.render(mapper.edit(shown)))
                return torch.cat([torch.cat(list(starts), -1), torch.cat(list(edits), -1)], -2)[None]

            frames = [to_uint8(grid())]
            losses: list[float] = []
            clip_losses: list[float] = []
            l2s: list[float] = []
            ids: list[float] = []
            t_setup = time.perf_counter()

            # 3. train on fresh latents every step (coach.py's loss)
            stopped, step = False, 0
            for step in range(1, total + 1):
                with torch.no_grad():
                    w = self._sample_w_plus(cfg.batch_size, cfg.truncation, gen)
                    emb0 = self.session.clip_embed(self.session.render(w))
                w_hat = mapper.edit(w)
                emb = self.session.clip_embed(self.session.render(w_hat))
                clip_loss = (1 - emb @ text.t()).mean()
                l2 = (w_hat - w).pow(2).mean()
                id_loss = (1 - (emb * emb0).sum(-1)).mean()
                loss = cfg.clip_weight * clip_loss + cfg.l2_weight * l2 + cfg.id_weight * id_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                clip_losses.append(float(clip_loss.detach()))
                l2s.append(float(l2.detach()))
                ids.append(float(id_loss.detach()))
                preview = None
                if step % cfg.preview_every == 0 or step == total:
                    image = grid()
                    cap_frames(frames, to_uint8(image), step == total)
                    preview = to_pil(image)
                metrics = {"loss": losses[-1], "clip_loss": clip_losses[-1], "l2": l2s[-1], "id": ids[-1]}
                if (yield Progress(step, total, preview, metrics)) == "stop" and step < total:
                    stopped = True
                    if preview is None:  # the video ends where the run stopped
                        frames.append(to_uint8(grid()))
                    break
            t_train = time.perf_counter()

            # 4. score the mapper on the held-out latents; package it
            mapper.eval().requires_grad_(False)
            with torch.no_grad():
                edited = self._render_batched(mapper.edit(w_eval))
                eval_emb = torch.cat([self.session.clip_embed(x) for x in edited.split(4)])
                image = grid()
        cos0, cos1 = (eval_emb0 @ text.t())[:, 0], (eval_emb @ text.t())[:, 0]
        scores = {"eval_clip_loss_before": float((1 - cos0).mean()), "eval_clip_loss": float((1 - cos1).mean()),
                  "clip_score_before": float(100 * cos0.clamp(min=0).mean()),
                  "clip_score": float(100 * cos1.clamp(min=0).mean())}
        if step:
            scores.update(loss=losses[-1], clip_loss=clip_losses[-1], l2=l2s[-1], id=ids[-1])
        mapper = mapper.cpu()
        mapper.prompt, mapper.generator_hash = prompt, g.identity()
        mapper.settings = run_settings(cfg, prompt=prompt)
        yield MapperTrainOutput(
            image=to_pil(image), frames=frames, mapper=mapper, prompt=prompt, generator_hash=g.identity(),
            losses=losses, clip_losses=clip_losses, l2_distances=l2s, id_losses=ids, scores=scores,
            timings={"setup_s": t_setup - t0, "train_s": t_train - t_setup,
                     "per_step_s": (t_train - t_setup) / max(step, 1), "total_s": time.perf_counter() - t0},
            seed=cfg.seed, settings=mapper.settings, stopped=stopped, steps_run=step, notice=self.session.scorer.notice)

    def train_mapper(self, prompt: str = "", *, callback: Callable | None = None, **settings: Any
                     ) -> MapperTrainOutput:
        """Run `iter_train_mapper(prompt, **settings)` to the end; `callback(step, total, preview)` returning False
        stops it (the result then holds the mapper trained so far)."""
        return drain(self.iter_train_mapper(prompt, **settings), callback)

    # -- applying ---------------------------------------------------------------------------------------------

    def iter_apply_mapper(self, latent_or_image: Any = None, mapper: Any = None, **settings: Any
                          ) -> Iterator[Progress | MapperEditOutput]:
        """Edit a latent with a trained mapper in one forward pass: w + strength 0.1 M(w).

        `latent_or_image`: as `iter_edit` takes it (None: a random start from `seed`; an image is inverted first,
        the "invert" stage). `mapper`: a `LatentMapper`, a `MapperTrainOutput`, a `.safetensors` path, or None (the
        pipeline's `mapper`). settings: any `MapperApplyConfig` field. Yields one `Progress` (after an inversion's
        steps), then the `MapperEditOutput`."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.mapper_apply_config, settings)
        mapper = self._mapper(mapper)
        session = self.session
        plan = session.plan_start(latent_or_image, cfg)
        n_inv = plan.invert_steps
        total = n_inv + 1

        with oom_guard("StyleCLIP mapper edit"):
            # 2. the start
            start, stopped, steps = yield from session.begin(plan, total)
            w0, noise = start.latent, start.noise
            t_start = time.perf_counter()
            # 3. one forward pass of the mapper, one of the generator
            with torch.no_grad():
                t_map = time.perf_counter()
                final = mapper.edit(w0, cfg.strength)
                t_map = time.perf_counter() - t_map
                img1 = self.session.render(final, noise)
                t_edit = time.perf_counter() - t_start
                img0 = self.session.render(w0, noise)
                text = self.session.scorer.encode_text([mapper.prompt or " "]).to(self.session.device)
                score_before = 100 * float((self.session.clip_embed(img0) @ text.t()).clamp(min=0))
                score_after = 100 * float((self.session.clip_embed(img1) @ text.t()).clamp(min=0))
            after, before = self.session.to_unit(img1), self.session.to_unit(img0)
            if not stopped:  # a stop sent now marks the result stopped; the edit is already whole
                steps = n_inv + 1
                command = yield Progress(steps, total, to_pil(after), {"clip_score": score_after},
                                         "apply" if n_inv else "")
                stopped = command == "stop"
        yield MapperEditOutput(
            image=to_pil(after), original=to_pil(before), image_tensor=after, original_tensor=before,
            latent=final.cpu(), start_latent=w0.cpu(), prompt=mapper.prompt, inversion=start.inversion,
            scores={"clip_score": score_after, "clip_score_before": score_before},
            timings={"start_s": t_start - t0, "mapper_s": t_map, "edit_s": t_edit, "total_s": time.perf_counter() - t0},
            seed=cfg.seed, settings=run_settings(cfg), stopped=stopped, steps_run=steps, notice=session.scorer.notice)

    def apply_mapper(self, latent_or_image: Any = None, mapper: Any = None, *, callback: Callable | None = None,
                     **settings: Any) -> MapperEditOutput:
        """Run `iter_apply_mapper(latent_or_image, mapper, **settings)` to the end."""
        return drain(self.iter_apply_mapper(latent_or_image, mapper, **settings), callback)


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------


def _load_apply(generator: str | None = None, clip: str | None = None, mapper: str | None = None,
                device: str | None = None) -> StyleCLIPMapperPipeline:
    pipe = StyleCLIPMapperPipeline.from_pretrained(generator, clip, device=device)
    if mapper:
        pipe.load_mapper(mapper)
    return pipe


register(Task(name="styleclip-mapper", title="Latent mapper training (StyleCLIP)", config=MapperConfig,
              pipeline=StyleCLIPMapperPipeline, method="iter_train_mapper", models=("generator", "clip"),
              load=StyleCLIPMapperPipeline.from_pretrained,
              inputs=(Input("prompt", "text", help="what the mapper's edits should show"),)))
register(Task(name="styleclip-mapper-apply", title="Latent mapper edit (StyleCLIP)", config=MapperApplyConfig,
              pipeline=StyleCLIPMapperPipeline, method="iter_apply_mapper", models=("generator", "clip", "mapper"),
              load=_load_apply,
              inputs=(Input("latent_or_image", "state", required=False,
                            help="None (a random start from the seed), a latent, an earlier result, or an image to "
                                 "invert first"),
                      Input("mapper", "state", required=False,
                            help="a trained mapper (result, LatentMapper, .safetensors path or a StyleCLIP .pt "
                                 "checkpoint); default: the one loaded with the pipeline (--mapper)"))))

__all__ = ["GROUPS", "LatentMapper", "MapperApplyConfig", "MapperConfig", "MapperEditOutput", "MapperTrainOutput",
           "StyleCLIPMapperPipeline", "check_generator", "convert_styleclip_mapper", "converted_dir", "load_mapper",
           "read_styleclip_mapper", "save_mapper"]
