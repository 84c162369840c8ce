"""Text to Image models: which model, what it is trained for (presets), the scheduler table, and loading it.

Nothing here imports torch or diffusers at import time (they load inside `resolve_pipeline`), so reading a model
family's settings (`pipelines.text2image.Text2ImageConfig.for_model`) loads no weights.

- `ModelPreset`: what a model family is trained for (steps, guidance, size, one-step or not); `preset_for(name)`
  finds a known model by repo id or folder name, `MULTI_STEP_PRESET` covers the other Stable Diffusion models.
- `SCHEDULERS`: the scheduler choices for multi-step models (name -> diffusers class name).
- `resolve_pipeline(name)`: explicit folder -> Hugging Face cache -> download, with an error naming what was tried.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.media import MAX_FRAMES, thin_frames  # noqa: F401 — refine/edit thin their videos the studio's one way

DEFAULT_MODEL = "stabilityai/sd-turbo"
# The bundled demo model (studio/assets/models/shapes-diffusion/, a diffusers folder trained here on the demo shapes
# by scripts/train_demo_diffusion.py): picked by this name, and the stand-in when the model cannot be had offline.
DEMO_MODEL = "shapes-diffusion"  # = studio.hub.DEMO_T2I (not imported here: studio.hub imports torch)
DEFAULT_SIDE = 512  # the image side when neither the preset nor a loaded model says otherwise (SD 1.x/2.x-base)
MAX_SIDE = 1024  # SD 2.x/Turbo were trained at 512-768; larger sides mostly repeat content and cost quadratic memory
MAX_BATCH = 8  # images per forward pass; more rarely fits a consumer GPU at 512x512
MAX_IMAGES = 64  # images (rerank candidates) per request
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_NEGATIVES = 8  # negative prompts per request (they are joined into one text of at most 77 tokens anyway)
# Gradient checkpointing for refine/edit: "auto" turns it on on GPUs only (it trades compute for activation memory,
# which a CPU with ample RAM does not need; on a CPU it slows small models several-fold).
CHECKPOINTING = ("auto", "on", "off")


@dataclass(frozen=True)
class ModelPreset:
    """What a model family is trained for: the starting settings of its generation and whether refine applies."""

    num_steps: int
    guidance_scale: float
    size: int | None  # None: the UNet's sample_size times the VAE scale factor (DEFAULT_SIDE before loading)
    one_step: bool


# Known models by repo id (a local folder matches on its last path component).
PRESETS: dict[str, ModelPreset] = {
    "stabilityai/sd-turbo": ModelPreset(num_steps=1, guidance_scale=0.0, size=512, one_step=True),  # model card
    "stabilityai/sdxl-turbo": ModelPreset(num_steps=1, guidance_scale=0.0, size=512, one_step=True),  # model card
    # made at 64x64; 20 DPM-Solver++ steps, guidance 5: the training script's oracle check settings (not tuned yet)
    DEMO_MODEL: ModelPreset(num_steps=20, guidance_scale=5.0, size=64, one_step=False),
}
# Other Stable Diffusion models: guidance 7.5 is diffusers' default; 25 steps is ours (diffusers' default is 50).
MULTI_STEP_PRESET = ModelPreset(num_steps=25, guidance_scale=7.5, size=None, one_step=False)

# Scheduler choices for multi-step models: name -> diffusers class name ("default" keeps the model's own).
SCHEDULERS: dict[str, str] = {
    "default": "",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++_2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def preset_for(name: str | None) -> ModelPreset | None:
    """The preset of a known model (by repo id, or a folder named like one), else None."""
    if not name:
        return None
    if name in PRESETS:
        return PRESETS[name]
    base = Path(name.rstrip("/\\")).name.lower()
    for key, preset in PRESETS.items():
        if key.split("/")[-1] == base:
            return preset
    return None


def demo_model_folder() -> Path:
    """The bundled demo model's diffusers folder (inside the `studio` package, so wheels carry it)."""
    import studio

    return Path(studio.__file__).resolve().parent / "assets" / "models" / DEMO_MODEL


def demo_notice(name: str, tried: list[str], how: str) -> str:
    """What the page says when the demo model stands in for `name` (worded as `studio.hub.clip_state` words the demo
    CLIP's stand-in): what was tried, and how to supply the model."""
    return (f"`{name}`: not cached here and it could not be had, so the bundled demo model `{DEMO_MODEL}` stands in "
            f"(64x64; it knows shapes, colours and positions, nothing else). Tried: {'; '.join(tried) or 'nothing'}. "
            f"To use `{name}`: {how}.")


def _looks_like_path(name: str) -> bool:
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained` without diffusers 0.42's own deprecation warning about `local_dir_use_symlinks` (it
    passes that argument to huggingface_hub on every cache lookup; the warning says nothing to our users)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        return cls.from_pretrained(name, **kwargs)


def resolve_pipeline(model: str | None = None, *, local_files_only: bool | None = None, **load_kwargs: Any):
    """Load a diffusers text-to-image pipeline: explicit folder -> Hugging Face cache -> download.

    `model` defaults to `STUDIO_T2I_MODEL`, then `DEFAULT_MODEL`; `DEMO_MODEL` ("shapes-diffusion") is the bundled
    demo folder. Downloads are skipped when `HF_HUB_OFFLINE` is set or `local_files_only=True`. Returns
    `(pipeline, name, where)`; raises `studio.hub.WeightsNotFoundError` naming the model, each place tried, and how
    to supply a local folder.
    """
    from diffusers import AutoPipelineForText2Image

    from studio.hub import WeightsNotFoundError, download_command, hub_reachable, offline

    name = model or os.environ.get("STUDIO_T2I_MODEL") or DEFAULT_MODEL
    if name == DEMO_MODEL:
        folder = demo_model_folder()
        if not (folder / "model_index.json").is_file():
            raise WeightsNotFoundError(name, [f"the bundled folder {folder}: not in this installation"],
                                       "train it with `python scripts/train_demo_diffusion.py --out "
                                       "studio/assets/models/shapes-diffusion` (see its model card)")
        return _from_pretrained(AutoPipelineForText2Image, str(folder), **load_kwargs), name, "the bundled demo model"
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return _from_pretrained(AutoPipelineForText2Image, expanded, **load_kwargs), name, f"local folder {expanded}"
    fetch = download_command(DEFAULT_MODEL if _looks_like_path(name) else name, "./model")
    how = (f"fetch the diffusers folder on a machine with internet (e.g. `{fetch}`), then pass that folder to "
           f"Text2ImagePipeline.from_pretrained(...) or set STUDIO_T2I_MODEL=/path/to/folder")
    if _looks_like_path(name):
        raise WeightsNotFoundError(name, [f"local folder {expanded}: does not exist (a diffusers folder holds "
                                          f"model_index.json, unet/, vae/, ...)"], how)
    tried = [f"local folder: no folder named {name!r}"]
    try:
        pipe = _from_pretrained(AutoPipelineForText2Image, name, local_files_only=True, **load_kwargs)
        return pipe, name, "Hugging Face cache"
    except Exception as err:  # diffusers raises OSError/EnvironmentError/ValueError depending on what is missing
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        tried.append(f"Hugging Face cache ({cache}): {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    is_offline = local_files_only if local_files_only is not None else offline()
    if is_offline:
        tried.append("download: skipped (HF_HUB_OFFLINE is set)" if local_files_only is None
                     else "download: skipped (local_files_only=True)")
    elif not hub_reachable():  # without this check huggingface_hub retries for most of a minute
        tried.append("download: the Hugging Face Hub cannot be reached (no network?)")
    else:
        try:
            pipe = _from_pretrained(AutoPipelineForText2Image, name, **load_kwargs)
            return pipe, name, "downloaded from the Hugging Face Hub"
        except Exception as err:
            tried.append(f"download: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    raise WeightsNotFoundError(name, tried, how)


def check_size(width: int, height: int) -> None:
    """Image sides must be multiples of 8 (the VAE halves them three times); ValueError naming the side."""
    for arg, value in (("width", width), ("height", height)):
        if value % 8:
            raise ValueError(f"`{arg}` must be a multiple of 8, got {value}")


@functools.cache
def dtype_kwarg() -> str:
    """The name of diffusers' dtype argument: `dtype` since diffusers renamed `torch_dtype` (0.42 warns on the old
    name); older releases know only `torch_dtype`."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (exists where `dtype` does)
    except ImportError:
        return "torch_dtype"
    return "dtype"
