"""StyleGAN2 checkpoints: the registry of known public ones, finding them (local folder, Hugging Face cache, a
download) and loading them strictly into `studio.generators.stylegan2.Generator`.

Files are rosinality/stylegan2-pytorch checkpoints (`{"g_ema": state_dict, "latent_avg": ...}`, as its
`convert_weight.py` and `train.py` write them), `.safetensors` with the same keys, or NVIDIA StyleGAN2-ADA network
pickles (`.pkl`), which `studio.generators.ada_pickle` reads without running any code from them and translates, and
`convert_ada_pickle` here checks and saves once as such a `.safetensors` file. Loading refuses any missing,
unexpected or mis-shaped key (`CheckpointMismatchError` lists them all) and never unpickles code
(`torch.load(weights_only=True)`). `Generator.identity()` (the cache key of StyleCLIP's channel relevance) is the
file's sha256 set here, or `state_dict_hash` of the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

import studio.generators.ada_pickle as ada_pickle
from studio.generators.base import DEMO_GENERATOR, CheckpointMismatchError, CheckpointNotFoundError
from studio.generators.stylegan2 import Generator, StyleGAN2Config, make_kernel, state_dict_hash
from studio.hub import read_error
from studio.safe_pickle import check_torch_file, describe_keys

# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """A known public rosinality-format checkpoint.

    `sources` are Hugging Face (repo, file) pairs tried in order, from the cache first and then by download;
    each is a copy that a widely used project downloads and loads into rosinality's `Generator` (named in
    `source_note`). None of them could be fetched from this machine, so their sha256 is not pinned: the strict
    key and shape check on load is what rejects a wrong file.
    """

    name: str
    config: StyleGAN2Config
    filename: str  # the name its publishers give it
    description: str
    sources: tuple[tuple[str, str], ...] = ()
    source_note: str = ""
    how_to_get: str = ""


_ROSINALITY = ("convert NVIDIA's official .pkl with rosinality/stylegan2-pytorch's convert_weight.py, or use the "
               "Google Drive copies its README links")
# Zeqiang-Lai/DragGAN's app downloads four of these from huggingface.co/aaronb/StyleGAN2 and loads them into
# rosinality's Generator with sizes ffhq 1024, cat/church/horse 256. JoJoGAN's Space uses the second FFHQ copy.
# The car file is named only by third-party scripts, in the same publisher's repository (ZeqiangLai/StyleGAN2).
_DRAGGAN = ("aaronb/StyleGAN2", "the copy Zeqiang-Lai/DragGAN downloads")
CHECKPOINTS: dict[str, CheckpointInfo] = {
    "ffhq-1024": CheckpointInfo(
        "ffhq-1024", StyleGAN2Config(1024, 512, 8, 2), "stylegan2-ffhq-config-f.pt",
        "FFHQ faces, config-f, 1024x1024 (StyleCLIP's default generator)",
        sources=((_DRAGGAN[0], "stylegan2-ffhq-config-f.pt"),
                 ("akhaliq/jojogan-stylegan2-ffhq-config-f", "stylegan2-ffhq-config-f.pt")),
        source_note=f"{_DRAGGAN[1]}; JoJoGAN's copy as a fallback",
        how_to_get=f"StyleCLIP's README links stylegan2-ffhq-config-f.pt; or {_ROSINALITY}"),
    "car-512": CheckpointInfo(
        "car-512", StyleGAN2Config(512, 512, 8, 2), "stylegan2-car-config-f.pt",
        "LSUN cars, config-f, 512x512 generator (the 512x384 crop is letterboxed)",
        sources=(("ZeqiangLai/StyleGAN2", "stylegan2-car-config-f.pt"),),
        source_note="the same publisher's repository under its current name; seen only in third-party scripts "
                    "that pin revision bb4e00dc, not in DragGAN's own list",
        how_to_get=_ROSINALITY),
    "cat-256": CheckpointInfo(
        "cat-256", StyleGAN2Config(256, 512, 8, 2), "stylegan2-cat-config-f.pt",
        "LSUN cats, config-f, 256x256", sources=((_DRAGGAN[0], "stylegan2-cat-config-f.pt"),),
        source_note=_DRAGGAN[1], how_to_get=_ROSINALITY),
    "church-256": CheckpointInfo(
        "church-256", StyleGAN2Config(256, 512, 8, 2), "stylegan2-church-config-f.pt",
        "LSUN churches, config-f, 256x256", sources=((_DRAGGAN[0], "stylegan2-church-config-f.pt"),),
        source_note=_DRAGGAN[1], how_to_get=_ROSINALITY),
    "horse-256": CheckpointInfo(
        "horse-256", StyleGAN2Config(256, 512, 8, 2), "stylegan2-horse-config-f.pt",
        "LSUN horses, config-f, 256x256", sources=((_DRAGGAN[0], "stylegan2-horse-config-f.pt"),),
        source_note=_DRAGGAN[1], how_to_get=_ROSINALITY),
}


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_INFERRED = {"size": 2048, "style_dim": 1024, "n_mlp": 16, "max_channels": 1024, "channel_multiplier": 8}


def infer_config(state: dict[str, torch.Tensor]) -> StyleGAN2Config:
    """Generator shape from a rosinality `g_ema` state dict."""
    try:
        n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
        style_dim = state["style.1.weight"].shape[1]
        n_rgbs = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
        size = 2 ** (n_rgbs + 2)
        max_channels = state["input.input"].shape[1]
        last = state[f"convs.{2 * n_rgbs - 1}.conv.weight"].shape[1] if n_rgbs else max_channels
    except KeyError as err:
        raise CheckpointMismatchError([str(err.args[0])], [], [], "checkpoint (cannot infer its shape)") from err
    # channels(size) = min(max_channels, 16384 * cm / size); when capped any cm >= 1 gives the same shapes.
    cm = max(1, round(last * size / 16384)) if last < max_channels else 2
    for name, value, hi in (("size", size, MAX_INFERRED["size"]), ("style_dim", style_dim, MAX_INFERRED["style_dim"]),
                            ("n_mlp", n_mlp, MAX_INFERRED["n_mlp"]),
                            ("max_channels", max_channels, MAX_INFERRED["max_channels"]),
                            ("channel_multiplier", cm, MAX_INFERRED["channel_multiplier"])):
        if not 1 <= value <= hi:  # refused before anything is allocated (0 rows once implied a huge generator)
            raise CheckpointMismatchError([], [], [], f"checkpoint (its tensors imply {name} {value}; a "
                                                      f"StyleGAN2 has 1 to {hi})")
    return StyleGAN2Config(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm,
                           max_channels=max_channels)


def check_strict(own: dict[str, tuple], state: dict[str, torch.Tensor | tuple], source: str = "checkpoint",
                 what: str = "the StyleGAN2 generator (rosinality format)") -> None:
    """Refuse `state` (tensors, or their shapes) unless its keys are exactly `own`'s (name -> shape) and every shape
    matches: a `CheckpointMismatchError` listing every missing, unexpected and mis-shaped key."""
    state = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in state.items()}
    own = {k: tuple(v) for k, v in own.items()}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [(k, state[k], own[k]) for k in sorted(own) if k in state and state[k] != own[k]]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source, what)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse any missing/unexpected key or shape mismatch of `state` against `model`, with all of them listed
    (`model` may live on the meta device: only its shapes are read)."""
    check_strict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state` into `model`, refusing any missing/unexpected key or shape mismatch, with all of them listed."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def load_weights_only(path: str | os.PathLike, what: str, expected: str, max_bytes: int | None = None,
                      zip_only: bool = False) -> dict:
    """The dict a `torch.save` file holds, read with `torch.load(weights_only=True)`: tensors and plain containers
    only, plus `argparse.Namespace` (rosinality's `train.py` and pSp-style training scripts store their arguments
    in the checkpoint; a plain attribute bag, no code runs). Anything else the file would import is refused
    before it runs, as a ValueError naming `what` the file should be; so is a file that holds no dict (`expected`
    says what it should hold). `max_bytes` bounds the file and, for torch's zip format, what its entries unpack
    to (checked from the zip directory before anything is read). `zip_only` refuses torch's legacy (pre-1.6)
    format, whose tensor sizes are only known by unpickling (a tiny file could make it allocate any amount)."""
    import zipfile

    is_zip = zipfile.is_zipfile(path)
    if zip_only and not is_zip:
        raise ValueError(f"cannot read {str(path)!r} as a {what}: not torch's zip format (torch.save since 1.6); "
                         "files in the legacy format are not read here")
    if max_bytes is not None:
        size = Path(path).stat().st_size
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                size = max(size, sum(info.file_size for info in archive.infolist()))
        if size > max_bytes:
            raise ValueError(f"{str(path)!r} holds {size / 2**20:.0f} MiB; a {what} is at most "
                             f"{max_bytes / 2**20:.0f} MiB")
    # the object graph the pickle describes is bounded before torch builds it (a 1 KB file can describe 2**60
    # shared tuples that hashing alone would walk forever, holding the GIL)
    check_torch_file(path, f"{what} {Path(path).name!r}")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError and friends: say what we accept
            raise ValueError(f"cannot read {str(path)!r} as a weights-only {what} (tensors and plain containers "
                             f"only): {read_error(path, err)}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{str(path)!r} holds a {type(raw).__name__}, expected {expected}")  # noqa: TRY004
    return raw


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(g_ema state dict, latent_avg or None) from a rosinality `.pt` or a `.safetensors` file.

    `.pt` files load with `load_weights_only` (`torch.load(weights_only=True)`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleGAN2 checkpoint not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: dict = load_file(str(path))
        latent_avg = raw.pop("latent_avg", None)
        return {k.removeprefix("g_ema."): v for k, v in raw.items()}, latent_avg
    raw = load_weights_only(path, "rosinality checkpoint", "a dict with 'g_ema'")
    if "g_ema" in raw:
        state, latent_avg = raw["g_ema"], raw.get("latent_avg")
    elif "style.1.weight" in raw:  # a bare generator state dict
        state, latent_avg = {k: v for k, v in raw.items() if k != "latent_avg"}, raw.get("latent_avg")
    else:
        raise ValueError(f"{str(path)!r} has no 'g_ema' entry (keys: {describe_keys(raw, 10)}); "
                         "expected a rosinality stylegan2-pytorch checkpoint")
    return dict(state), latent_avg


def load_generator(path_or_name: str | os.PathLike, config: StyleGAN2Config | None = None,
                   device: str | torch.device = "cpu") -> Generator:
    """Build a `Generator` and load a rosinality checkpoint strictly.

    `path_or_name`: a file path (`.pt`, `.safetensors`, or an NVIDIA StyleGAN2-ADA `.pkl`: read safely and
    converted once, `studio.generators.ada_pickle`); `hf:OWNER/REPO/FILE.pt` (a Hugging Face repo you name: taken
    from the local cache, else downloaded once); or a name from `CHECKPOINTS` (its file in `$STUDIO_STYLEGAN_DIR`,
    default `~/.cache/studio/stylegan2`, else the Hugging Face cache, else downloaded once: `resolve_named_checkpoint`).
    `config` defaults to the registry entry or is inferred from the weights. Sets `latent_avg` ((1, style_dim), or
    the mean of 4096 mapped z when absent) and `checkpoint_hash`.
    """
    path = Path(path_or_name)
    if str(path_or_name).startswith("hf:"):
        path = resolve_hub_checkpoint(str(path_or_name))
    elif not path.is_file() and str(path_or_name) in CHECKPOINTS:
        info = CHECKPOINTS[str(path_or_name)]
        path = resolve_named_checkpoint(info)
        config = config or info.config
    elif not path.is_file():
        what = "not found" if not path.exists() else "not a file"
        raise ValueError(f"`path_or_name` {str(path_or_name)!r}: {what}. Give a checkpoint file, "
                         f"'hf:OWNER/REPO/FILE.pt' or one of {[DEMO_GENERATOR, *sorted(CHECKPOINTS)]}")
    source_path = path
    if path.suffix == ".pkl":  # NVIDIA StyleGAN2-ADA: read without running its code, converted once to safetensors
        path = convert_ada_pickle(path)
    state, latent_avg = read_checkpoint(path)
    config = config or infer_config(state)
    source = f"checkpoint {str(path)!r}"
    # Keys and shapes are checked on a generator with no storage (the meta device) before the real one is
    # allocated: a 3.7 KB file whose tensor shapes implied a huge generator once cost gigabytes per request.
    with torch.device("meta"):
        probe = Generator(**asdict(config))
    check_state_dict(probe, state, source)
    del probe
    model = Generator(**asdict(config))
    load_state_dict_strict(model, state, source=source)
    if latent_avg is not None:
        model.latent_avg = latent_avg.reshape(1, -1).float()
    else:
        model.latent_avg = model.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    model = model.to(device).eval().requires_grad_(False)
    model.checkpoint_hash = file_hash(path)
    model.checkpoint_path = str(source_path)
    return model


def resolve_named_checkpoint(info: CheckpointInfo) -> Path:
    """A registry entry -> a local file: `$STUDIO_STYLEGAN_DIR/<filename>`, else the Hugging Face cache of one of
    its sources, else a download (`studio.hub.fetch_hub_file`). The error lists each place tried and how to get
    the file by hand."""
    from studio.hub import fetch_hub_file

    local = checkpoint_dir() / info.filename
    if local.is_file():
        return local
    tried = [f"{local} (missing)"]
    if not info.sources:
        tried.append("no download address is known for this checkpoint")
    path = fetch_hub_file([(repo, (name,)) for repo, name in info.sources], tried)
    if path is not None:
        return path
    raise CheckpointNotFoundError(
        f"StyleGAN2 checkpoint {info.name!r} ({info.description}) could not be found. Tried: " + "; ".join(tried)
        + f". To supply it by hand, get {info.filename} ({info.how_to_get}) and put it at {str(local)!r}, or "
        "pass its path (STUDIO_STYLEGAN=/path/to/file.pt).")


def resolve_hub_checkpoint(spec: str) -> Path:
    """`hf:OWNER/REPO/PATH/IN/REPO.pt` -> a local file: the Hugging Face cache, else a download (unless offline or
    the Hub cannot be reached)."""
    from studio.hub import fetch_hub_file

    parts = spec.removeprefix("hf:").split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"`path_or_name` must look like 'hf:OWNER/REPO/FILE.pt', got {spec!r}")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    tried: list[str] = []
    path = fetch_hub_file([(repo_id, (filename,))], tried)
    if path is None:
        raise CheckpointNotFoundError(f"{filename!r} from {repo_id!r} could not be had. Tried: " + "; ".join(tried)
                                + ". Pass a local path instead, or download it once with network access.")
    return path


def save_generator(model: Generator, path: str | os.PathLike) -> None:
    """Write `{"g_ema": state_dict, "latent_avg": (style_dim,)}` exactly as rosinality's converter does."""
    latent_avg = model.latent_avg if model.latent_avg is not None else model.mean_latent(4096)
    torch.save({"g_ema": model.state_dict(), "latent_avg": latent_avg.reshape(-1).cpu()}, str(path))


def checkpoint_dir() -> Path:
    return Path(os.environ.get("STUDIO_STYLEGAN_DIR", Path.home() / ".cache" / "studio" / "stylegan2"))


# --------------------------------------------------------------------------------------------------------------
# NVIDIA StyleGAN2-ADA pickles: translated by `ada_pickle`, converted and cached here
# --------------------------------------------------------------------------------------------------------------


def converted_path(path: str | os.PathLike, digest: str) -> Path:
    return checkpoint_dir() / "converted" / f"{Path(path).stem}-{digest[:16]}.safetensors"


def convert_ada_pickle(path: str | os.PathLike) -> Path:
    """A StyleGAN2-ADA `.pkl` -> a rosinality-layout `.safetensors` file (converted once, then reused): read
    safely, renamed, checked strictly against the generator its shapes imply, saved. Returns the file."""
    from safetensors.torch import save_file

    digest = file_hash(path)
    out = converted_path(path, digest)
    if out.is_file():
        return out
    source = f"StyleGAN2-ADA pickle {str(path)!r}"
    data = ada_pickle.read_ada_pickle(path)
    g_ema = data["G_ema"]
    if g_ema.class_name != "Generator":
        raise ValueError(f"{source}: G_ema is a {g_ema.class_name!r}, expected NVIDIA's 'Generator'")
    ada = ada_pickle.stub_state_dict(g_ema)
    state, latent_avg = ada_pickle.ada_to_rosinality(ada, source)
    config = infer_config(state)
    with torch.device("meta"):
        probe = Generator(**config.__dict__)
    # the blur kernels are fixed by the config (not in the pickle); keys and shapes are checked on the storage-less
    # probe first, so a crafted file cannot make a huge generator be allocated
    kernels = [k for k in probe.state_dict() if k.endswith(".kernel")]
    check_state_dict(probe, {**state, **{k: probe.state_dict()[k] for k in kernels}}, source)
    state.update(_kernels(config))
    check_state_dict(probe, state, source)
    tensors = {f"g_ema.{k}": v.contiguous() for k, v in state.items()}
    if latent_avg is not None:
        tensors["latent_avg"] = latent_avg.reshape(-1).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
    save_file(tensors, str(tmp), metadata={"format": "rosinality-stylegan2", "converted_from": Path(path).name,
                                           "source_sha256": digest})
    os.replace(tmp, out)
    return out


def _kernels(config: StyleGAN2Config) -> dict[str, torch.Tensor]:
    """Values of the fixed FIR buffers of a generator of `config`: every one is a 2x resampling kernel (the
    upsampling convolutions' blur and the toRGB skip's upsample), [1, 3, 3, 1] normalised, times 4."""
    with torch.device("meta"):
        keys = [k for k in Generator(**config.__dict__).state_dict() if k.endswith(".kernel")]
    return {k: make_kernel(config.blur_kernel) * 4 for k in keys}


__all__ = [
    "CHECKPOINTS", "CheckpointInfo", "CheckpointMismatchError", "CheckpointNotFoundError", "check_state_dict",
    "check_strict", "checkpoint_dir", "convert_ada_pickle", "converted_path", "file_hash", "infer_config",
    "load_generator", "load_state_dict_strict", "load_weights_only", "read_checkpoint", "resolve_hub_checkpoint",
    "resolve_named_checkpoint", "save_generator", "state_dict_hash",
]
