"""Resolving model weights: explicit path → Hugging Face cache → download → bundled demo model.

Every loader in the studio goes through here so that the order, the offline behaviour and the error
text are the same everywhere. Checkpoints load only through safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from studio.defaults import DEMO_CLIP  # noqa: F401 — the bundled demo CLIP, named in studio/defaults.py

MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"  # inside the package, so wheels carry it
DEMO_T2I = "shapes-diffusion"  # the bundled demo diffusion model (a diffusers folder there), trained on the same
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# File names open_clip uses on the Hugging Face Hub, safest first.
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsNotFoundError(RuntimeError):
    """No weights could be had for a model: names the model, what was tried, and how to supply them."""

    setup_problem = True  # the page keeps this message on screen until dismissed (studio.ui.common.user_errors)

    def __init__(self, model: str, tried: list[str], how: str):
        self.model, self.tried, self.how = model, tried, how
        lines = "\n".join(f"  - {t}" for t in tried) or "  - (nothing)"
        super().__init__(f"No weights found for {model!r}. Tried:\n{lines}\nTo supply them: {how}")


@dataclass
class ClipSource:
    """Where a CLIP spec's weights come from, after resolution."""

    spec: str  # what the user asked for
    arch: str  # open_clip model config name
    weights: Path | None  # a weights file, or None for random init (benchmarks, tests)
    kind: str  # "demo" | "local" | "cache" | "download" | "random"
    quick_gelu: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    notice: str | None = None  # shown to the user, e.g. when the demo model stands in for real weights
    tried: list[str] = field(default_factory=list)

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"


def _did_you_mean(word: str, choices: list[str]) -> str:
    """" (did you mean 'openai'?)" for a near miss of one of `choices`, else ""."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def read_error(path: str | os.PathLike, err: BaseException) -> str:
    """Why a checkpoint file could not be read, in words: "the file is empty" where it is (torch says nothing
    then), else the reader's first line, or its exception's name when it gave no message."""
    try:
        if Path(path).stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors safely: safetensors, or a pickle through `weights_only=True`.

    Accepts plain state dicts and the common wrappers (`{"state_dict": ...}`, a `module.` prefix).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        from studio.safe_pickle import check_torch_file

        check_torch_file(path, f"checkpoint {path.name!r}")  # the pickle's object graph, bounded before it is built
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # TorchScript archives and arbitrary pickles land here
            raise ValueError(
                f"checkpoint {str(path)!r} cannot be loaded safely (only safetensors or plain tensor pickles are "
                f"accepted; TorchScript/JIT archives and pickled objects are refused): {read_error(path, err)}"
            ) from err
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(sd).__name__}, not a state dict")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of `filenames` already in the local Hugging Face cache (HF_HOME), without network."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


_REACHABLE: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection; remembered for a minute.

    Without this probe huggingface_hub retries for most of a minute on a machine with no network before
    giving up, and a user's first click would hang that long before falling back to the demo model.
    """
    import socket
    import time
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    now = time.monotonic()
    hit = _REACHABLE.get(endpoint)
    if hit is not None and now - hit[0] < 60:
        return hit[1]
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _REACHABLE[endpoint] = (now, ok)
    return ok


def hf_download(repo_id: str, filenames: tuple[str, ...]) -> tuple[Path | None, str | None]:
    """Download the first available of `filenames` (huggingface_hub shows a progress bar). Returns (path, error)."""
    from huggingface_hub import hf_hub_download

    last = None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo_id, name, etag_timeout=10)), None
        except Exception as err:  # network errors, missing files, gated repos: try the next, report the last
            last = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None, last


def fetch_hub_file(sources: Sequence[tuple[str, tuple[str, ...]]], tried: list[str],
                   download: bool = True) -> Path | None:
    """The first of `sources` ((repo_id, candidate filenames) pairs) in the local Hugging Face cache, else the
    first that downloads (skipped under HF_HUB_OFFLINE, when the Hub cannot be reached, or with `download=False`).
    Appends to `tried` what was looked at and why a download did not happen; None when nothing was had."""
    for repo_id, names in sources:
        cached = hf_cached_file(repo_id, names)
        if cached is not None:
            return cached
        tried.append(f"Hugging Face cache of {repo_id}/{', '.join(names)}: not there")
    if not download:
        tried.append("download: not tried")
    elif offline():
        tried.append("download: skipped, HF_HUB_OFFLINE is set")
    elif not hub_reachable():
        tried.append("download: skipped, the Hugging Face Hub cannot be reached (no network?)")
    else:
        for repo_id, names in sources:
            path, err = hf_download(repo_id, names)
            if path is not None:
                return path
            tried.append(f"download of {repo_id}/{', '.join(names)}: {err}")
    return None


def demo_clip_source(spec: str, tried: list[str] | None = None, notice: str | None = None) -> ClipSource:
    weights = MODELS_DIR / f"{DEMO_CLIP}.safetensors"
    config = MODELS_DIR / f"{DEMO_CLIP}.json"
    if not (weights.is_file() and config.is_file()):
        raise WeightsNotFoundError(
            DEMO_CLIP, (tried or []) + [f"bundled demo model at {weights} (missing)"],
            "reinstall the studio (studio/assets/models/ ships the demo CLIP)",
        )
    if notice is None:
        notice = (f"Using the bundled demo CLIP ('{DEMO_CLIP}'), trained here on synthetic drawings: it knows "
                  f"shapes, colours and positions, nothing else. For real images pick a real CLIP such as "
                  f"'ViT-B-32/openai' (downloaded once, then cached).")
    return ClipSource(spec=spec, arch=DEMO_CLIP, weights=weights, kind="demo", notice=notice, tried=tried or [])


def _split_spec(spec: str) -> tuple[str, str | None]:
    """'ViT-B-32/openai' → ('ViT-B-32', 'openai'); 'ViT-B-32:/path/w.safetensors' → ('ViT-B-32', '/path/...')."""
    if ":" in spec and not spec.startswith(("hf-hub:", "local-dir:")):
        arch, _, rest = spec.partition(":")
        return arch, rest
    if "/" in spec:
        arch, _, tag = spec.partition("/")
        return arch, tag
    return spec, None


def download_command(repo_id: str, local_dir: str | None = None) -> str:
    """The shell command that fetches a Hub repository with the installed huggingface_hub: `hf download` (its CLI
    since 0.34), or `huggingface-cli download` for older releases."""
    try:
        import huggingface_hub

        major, minor = (int(x) for x in huggingface_hub.__version__.split(".")[:2])
        tool = "hf" if (major, minor) >= (0, 34) else "huggingface-cli"
    except (ImportError, ValueError):
        tool = "hf"
    return f"{tool} download {repo_id}" + (f" --local-dir {local_dir}" if local_dir else "")


def download_blocker() -> str | None:
    """Why a download would not happen now (HF_HUB_OFFLINE, or the Hub cannot be reached), or None when it would:
    the wording every model-state line and loading notice uses. The reachability probe is remembered a minute."""
    if offline():
        return "downloads are off (HF_HUB_OFFLINE)"
    if not hub_reachable():
        return "the Hugging Face Hub cannot be reached"
    return None


def hub_file_state(sources: Sequence[tuple[str, tuple[str, ...]]]) -> tuple[str, str]:
    """Where `fetch_hub_file(sources, ...)` would get its file now, without downloading: ("cache", path),
    ("download", "") or ("missing", why a download would not happen)."""
    for repo_id, names in sources:
        cached = hf_cached_file(repo_id, names)
        if cached is not None:
            return "cache", str(cached)
    why = download_blocker()
    return ("download", "") if why is None else ("missing", why)


def clip_state(spec: str) -> str:
    """What a CLIP spec will really run, said before anything loads: cached real weights, a download to come, the
    demo model standing in (and why), or random weights. Looks only at local files and, where downloads are
    allowed, the Hub's reachability (a 3-second probe, remembered for a minute)."""
    try:
        source = resolve_clip(spec, allow_demo=True, download=False)
    except WeightsNotFoundError as err:
        return f"`{spec}`: no weights ({'; '.join(err.tried)}), so it cannot be loaded"
    except ValueError as err:
        return f"`{spec}`: {str(err).splitlines()[0]}"
    if source.kind == "demo" and spec.strip() == DEMO_CLIP:
        return f"`{spec}`: the bundled demo CLIP (it knows shapes, colours and positions, nothing else)"
    if source.kind == "demo":
        why = download_blocker()
        if why is None:
            return f"`{spec}`: not cached here; downloaded once on first use, then cached"
        return f"`{spec}`: not cached here and {why}, so the bundled demo CLIP `{DEMO_CLIP}` will stand in"
    if source.kind == "random":
        return f"`{spec}`: random weights (it has learnt nothing; its answers are close to uniform)"
    return f"`{spec}`: real weights, {'cached' if source.kind == 'cache' else 'a local file'}; loaded on first use"


def diffusers_state(name: str) -> str:
    """What a diffusers model name will really load, said before anything loads (as `clip_state` says it for a
    CLIP): a local folder, the Hugging Face cache, a download to come, or what is missing and why."""
    if name == DEMO_T2I:
        if not (MODELS_DIR / DEMO_T2I / "model_index.json").is_file():
            return f"`{name}`: the bundled demo model is not in this installation, so it cannot be loaded"
        return f"`{name}`: the bundled demo model (64x64; it knows shapes, colours and positions, nothing else)"
    folder = Path(name).expanduser()
    if folder.is_dir():
        return f"`{name}`: a local folder; loaded on first use"
    if name.startswith((os.sep, ".", "~")) or name.count("/") > 1:  # a path, not a Hub repo id
        return f"`{name}`: no such folder"
    kind, why = hub_file_state([(name, ("model_index.json",))])
    if kind == "cache":
        return f"`{name}`: cached here; loaded on first use"
    if kind == "download":
        return f"`{name}`: not cached here; downloaded once on first use (several GB), then cached"
    return f"`{name}`: not cached here and {why}, so it cannot be loaded"


def real_weights_within_reach(spec: str) -> bool:
    """Whether the real weights of a spec that fell back to the demo model could now be had: they appeared
    locally (a file at STUDIO_CLIP_WEIGHTS, the Hugging Face cache after an `hf download`), or the
    Hub became reachable. Never downloads; the reachability probe is remembered for a minute."""
    try:
        if not resolve_clip(spec, allow_demo=True, download=False).is_demo:
            return True
    except (ValueError, WeightsNotFoundError):
        return False
    return not offline() and hub_reachable()


def resolve_clip(spec: str, allow_demo: bool = True, download: bool = True) -> ClipSource:
    """Resolve a CLIP spec to an architecture and a weights file.

    Specs: `shapes-clip` (the bundled demo), `ARCH/TAG` as open_clip names them (`ViT-B-32/openai`),
    `ARCH:/path/to/weights.safetensors` (a local checkpoint of that architecture), `ARCH/random` (random
    weights: benchmarks), or a bare config name registered with `open_clip.add_model_config` that has no
    pretrained tags (random init: tests). Real weights that cannot be had fall back to the demo model with a
    notice when `allow_demo`, else raise `WeightsNotFoundError`. `download=False` looks only at local files.
    """
    import open_clip

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"`spec` must be a non-empty model name, got {spec!r}")
    spec = spec.strip()
    if spec == DEMO_CLIP:
        return demo_clip_source(spec)
    arch, tag = _split_spec(spec)
    # The QuickGELU variant of an architecture is named "-quickgelu"; the plain name with an OpenAI tag needs it.
    if arch not in open_clip.list_models():
        raise ValueError(
            f"`spec` {spec!r}: unknown architecture {arch!r}{_did_you_mean(arch, open_clip.list_models())}. Use "
            f"'{DEMO_CLIP}', 'ARCH/TAG' with ARCH one of open_clip.list_models() (e.g. 'ViT-B-32/openai', "
            "'RN101/openai'), or 'ARCH:/path/to/weights'"
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    random_notice = (f"CLIP {spec!r} has random weights (no pretrained tag): it has learnt nothing, so its labels "
                     f"and scores are close to uniform. For real answers use '{arch}/TAG'"
                     + (f" with TAG one of {tags}." if tags else " with trained weights."))
    if tag is None:
        if tags:
            raise ValueError(f"`spec` {spec!r} needs pretrained weights: write '{arch}/TAG' with TAG one of {tags}")
        return ClipSource(spec=spec, arch=arch, weights=None, kind="random", notice=random_notice)
    if tag == "random":
        return ClipSource(spec=spec, arch=arch, weights=None, kind="random", notice=random_notice)
    if os.sep in tag or tag.endswith(_WEIGHT_SUFFIXES):  # ARCH:/path
        path = Path(tag).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(spec, [f"local file {path} (missing)"], "check the path")
        return ClipSource(spec=spec, arch=arch, weights=path, kind="local")
    if tag not in tags:
        close = _did_you_mean(tag, tags)
        # a near miss gets the one suggestion, not the ~20 tags (issue 29: the page showed the list three times)
        raise ValueError(f"`spec` {spec!r}: unknown pretrained tag {tag!r} for {arch}"
                         + (f"{close}; {len(tags)} tags in open_clip.list_pretrained_tags_by_model({arch!r})"
                            if close else f"; valid tags: {', '.join(tags)}"))

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    common = dict(spec=spec, arch=arch, quick_gelu=bool(cfg.get("quick_gelu", False)),
                  mean=tuple(cfg["mean"]) if cfg.get("mean") else None,
                  std=tuple(cfg["std"]) if cfg.get("std") else None)
    tried: list[str] = []
    env_path = os.environ.get("STUDIO_CLIP_WEIGHTS")
    if env_path:
        if Path(env_path).is_file():
            return ClipSource(weights=Path(env_path), kind="local", **common)
        tried.append(f"STUDIO_CLIP_WEIGHTS={env_path} (missing)")
    hf_hub = cfg.get("hf_hub", "")
    how = ("download it once with network access (cached under HF_HOME"
           + (f"; on another machine `{download_command(hf_hub.split('/')[0] + '/' + hf_hub.split('/')[1])}` "
              "and copy the cache" if hf_hub.count("/") >= 1 else "")
           + f"), or point STUDIO_CLIP_WEIGHTS / the spec '{arch}:/path/to/weights.safetensors' at a local copy")
    if hf_hub:
        parts = hf_hub.split("/")
        repo_id = "/".join(parts[:2])
        names = (parts[2],) if len(parts) > 2 and parts[2] else _HF_WEIGHT_FILES
        misses = len(tried)
        path = fetch_hub_file([(repo_id, names)], tried, download=download)
        if path is not None:  # a cache miss is always noted, so nothing noted means the cache had it
            return ClipSource(weights=path, kind="cache" if len(tried) == misses else "download", **common)
    else:
        tried.append(f"no Hugging Face Hub location is known for {arch}/{tag}")
    if allow_demo:
        notice = (f"Using the bundled demo CLIP ('{DEMO_CLIP}': knows shapes, colours and positions only) because "
                  f"weights for {spec!r} could not be had. To use them: {how}.")
        return demo_clip_source(spec, tried, notice)
    raise WeightsNotFoundError(spec, tried, how)
