"""NVIDIA StyleGAN2-ADA network pickles (`.pkl`, NVlabs/stylegan2-ada-pytorch) read without running their code,
translated to `studio.generators.stylegan2.Generator`'s (rosinality's) layout. A pure translator: reading and
renaming only; `studio.generators.checkpoints` (the loader) converts, checks, saves and caches.

An ADA pickle is a dict ({"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}) whose networks are
`torch_utils.persistence` objects: each pickles as a call of `torch_utils.persistence._reconstruct_persistent_obj`
with a `meta` dict holding the *source code* of its module (`module_src`, which NVIDIA's loader `exec`s), the
class name and the object's `__dict__` (`state`: the module's `_parameters`, `_buffers` and `_modules`). Plain
`pickle.load` would run that source -- and any other callable the file names. `read_ada_pickle` instead uses an
unpickler whose `find_class` knows a short list of names only:

* tensors: `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` (and their older forms), and
  `torch.storage._load_from_bytes` -- replaced by a function that reads the storage bytes with
  `torch.load(weights_only=True)`;
* containers: `collections.OrderedDict`, `builtins.set` / `frozenset`, `dnnlib.util.EasyDict` (read as a dict);
  numpy scalars and arrays (`numpy.core.multiarray.scalar` / `_reconstruct`, `numpy.dtype`, `numpy.ndarray`);
  torch dtypes and `torch.Size`;
* `torch_utils.persistence._reconstruct_persistent_obj`, replaced by `_PersistentStub`, an inert record of the
  class name and state; `module_src` is never executed (nor kept).

Any other name is refused (`UnsafePickleError`, a ValueError naming it) before it is imported, and nothing else
in the file can call code: pickle only calls what `find_class` returns. The generator's parameters (G_ema) are then
renamed to rosinality's keys (`ada_to_rosinality`); the loader (`checkpoints.convert_ada_pickle`) checks them
strictly against the generator built for their shapes and writes them as `<name>-<sha256[:16]>.safetensors` in
`$STUDIO_STYLEGAN_DIR/converted` (default ~/.cache/studio/stylegan2/converted), so the next load reads that file
and needs no pickle at all.

The arithmetic is the same: NVIDIA's mapping layers, affines, modulated convolutions (ADA keeps the raw kernel and
applies the weight gain to the toRGB styles only; demodulation cancels it elsewhere), noise, biases and the skip
toRGB path are rosinality's after renaming, as both port StyleGAN2's TF graph: the renaming is NVIDIA `legacy.py`'s
TF -> ADA table composed with rosinality `convert_weight.py`'s TF -> rosinality one (both flip the upsampling
kernels, add 1 to the affine biases, and number the noise maps the same way). That was checked by reading both;
no real ADA pickle could be fetched here, so the tests use pickles written with NVIDIA's names and layout.
Not carried over: `conv_clamp` (NVIDIA's configs with fp16 layers clamp the activations to +-256; not applied
here, so an image can differ where an activation would have been clamped) and fp16 blocks (run in the precision
asked for).
Conditional generators (`c_dim` > 0), the 'resnet' and 'orig' synthesis architectures and StyleGAN3 pickles are
refused with a message.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.generators.base import CheckpointMismatchError
from studio.generators.stylegan2 import make_kernel
from studio.safe_pickle import NotAPickleError, check_pickle_graph, check_torch_file, describe_keys

PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
MAX_PICKLE_BYTES = 4 << 30  # an FFHQ-1024 snapshot (G, D, G_ema) is ~360 MB


class UnsafePickleError(ValueError):
    """A pickle that names something the safe reader does not allow (nothing was imported or run)."""

    setup_problem = True


class _EasyDict(dict):
    """dnnlib.util.EasyDict, read as a plain dict (no attribute magic needed here)."""


class _PersistentStub:
    """What a `torch_utils.persistence` object becomes: its class name and `__dict__` (module source dropped)."""

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __repr__(self) -> str:
        return f"<persistent {self.class_name}>"


def _reconstruct_persistent_obj(meta: Any) -> _PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("a torch_utils.persistence object without the expected meta (type 'class', "
                                "class_name, state)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent {meta['class_name']!r} has no state dict")
    return _PersistentStub(meta["class_name"], state)


def _load_storage_from_bytes(data: bytes) -> Any:
    """torch.storage._load_from_bytes, weights only (the bytes are a nested torch.save of one storage)."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("a tensor storage that is not bytes")
    check_torch_file(data, "a tensor storage in the pickle")  # its own pickles, bounded like the outer one
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _allowed() -> dict[tuple[str, str], Any]:
    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {
        PERSISTENCE: _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
        ("dnnlib.util", "EasyDict"): _EasyDict, ("dnnlib", "EasyDict"): _EasyDict,
        ("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray,
        ("torch", "Size"): torch.Size,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(tu, name):
            allowed[("torch._utils", name)] = getattr(tu, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
        allowed[(mod, "_reconstruct")] = (np._core.multiarray._reconstruct if hasattr(np, "_core")
                                          else np.core.multiarray._reconstruct)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"):
        allowed[("torch", name)] = getattr(torch, name)
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str):
        super().__init__(file)
        self.source = source
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source} asks to import {module}.{name}; refused: a StyleGAN2-ADA network pickle is read "
                "with an unpickler that allows only tensors, plain containers and NVIDIA's persistent network "
                "records (nothing from the file is imported or run)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source} uses persistent ids (a torch.save file, not a network pickle)")


def check_pickle_graph_file(path: Path) -> None:
    """The outer pickle's object graph bounded before `_SafeUnpickler` builds it (see `studio.safe_pickle`)."""
    with open(path, "rb") as f:
        try:
            check_pickle_graph(f, f"StyleGAN2-ADA pickle {path.name!r}")
        except NotAPickleError as err:  # a torch.save zip, a truncated or foreign file
            raise ValueError(f"cannot read {str(path)!r} as a StyleGAN2-ADA network pickle: {err}") from None


def read_ada_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level dict of an NVIDIA network pickle, networks as `_PersistentStub`s; no code runs."""
    path = Path(path)
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise ValueError(f"{str(path)!r} is {path.stat().st_size / 2**30:.1f} GiB; a StyleGAN2-ADA snapshot is under "
                         f"{MAX_PICKLE_BYTES / 2**30:.0f} GiB")
    check_pickle_graph_file(path)
    with open(path, "rb") as f:
        try:
            data = _SafeUnpickler(f, repr(str(path))).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # a truncated or foreign file
            raise ValueError(f"cannot read {str(path)!r} as a StyleGAN2-ADA network pickle: "
                             f"{type(err).__name__}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), _PersistentStub):
        keys = describe_keys(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{str(path)!r} is not a StyleGAN2-ADA network pickle (expected a dict with a persistent "
                         f"'G_ema' network; got {keys})")
    return data


def stub_state_dict(stub: _PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """A torch-style state dict (parameters and buffers, dotted names) of a persistent module record."""
    out: dict[str, torch.Tensor] = {}
    state = stub.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name} in persistent {stub.class_name!r} is not a tensor")
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentStub):
            raise ValueError(f"{prefix}{name} in persistent {stub.class_name!r} is not a network record")
        out.update(stub_state_dict(child, f"{prefix}{name}."))
    return out


_BLOCK = re.compile(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(affine\.weight|affine\.bias|weight|bias|noise_const|"
                    r"noise_strength|resample_filter)$")


def ada_to_rosinality(ada: dict[str, torch.Tensor], source: str = "pickle"
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """NVIDIA's G_ema state dict -> (rosinality `g_ema` state dict without the fixed blur kernels, latent_avg).

    Every key must be consumed: any other one (a conditional generator's `mapping.embed`, a 'resnet' block's
    `skip`, StyleGAN3's layers) is refused, as is an FIR filter other than [1, 3, 3, 1].
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    latent_avg = ada.get("mapping.w_avg")
    filt = make_kernel((1, 3, 3, 1))
    for key, value in ada.items():
        value = value.float()
        m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key)
        if m:
            out[f"style.{int(m[1]) + 1}.{m[2]}"] = value
            continue
        if key == "mapping.w_avg":
            continue
        if key == "synthesis.b4.const":
            out["input.input"] = value[None]
            continue
        if re.fullmatch(r"synthesis\.b\d+\.resample_filter", key):
            if value.shape != filt.shape or not torch.allclose(value, filt, atol=1e-6):
                raise CheckpointMismatchError([], [], [], f"{source} (its FIR filter {key} is not [1, 3, 3, 1])")
            continue
        m = _BLOCK.fullmatch(key)
        if not m:
            unknown.append(key)
            continue
        res, layer, what = int(m[1]), m[2], m[3]
        k = int(np.log2(res)) - 3  # block index above 4x4
        if res == 4:
            if layer == "conv0":
                unknown.append(key)
                continue
            target, noise_index = ("conv1", 0) if layer == "conv1" else ("to_rgb1", None)
        else:
            target, noise_index = {"conv0": (f"convs.{2 * k}", 2 * k + 1), "conv1": (f"convs.{2 * k + 1}", 2 * k + 2),
                                   "torgb": (f"to_rgbs.{k}", None)}[layer]
        if what == "resample_filter":
            if value.shape != filt.shape or not torch.allclose(value, filt, atol=1e-6):
                raise CheckpointMismatchError([], [], [], f"{source} (its FIR filter {key} is not [1, 3, 3, 1])")
        elif what.startswith("affine."):
            out[f"{target}.conv.modulation.{what.split('.')[1]}"] = value
        elif what == "weight":
            out[f"{target}.conv.weight"] = value[None]
        elif what == "bias":
            out[f"{target}.bias" if layer == "torgb" else f"{target}.activate.bias"] = (
                value.view(1, -1, 1, 1) if layer == "torgb" else value)
        elif what == "noise_const" and noise_index is not None:
            out[f"noises.noise_{noise_index}"] = value[None, None]
        elif what == "noise_strength" and noise_index is not None:
            out[f"{target}.noise.weight"] = value.reshape(1)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointMismatchError([], sorted(unknown), [], f"{source} (G_ema has layers the StyleGAN2 'skip' "
                                                               "generator does not: conditional, resnet or "
                                                               "StyleGAN3?)")
    return out, (latent_avg.float().reshape(1, -1) if latent_avg is not None else None)


__all__ = ["UnsafePickleError", "ada_to_rosinality", "read_ada_pickle", "stub_state_dict"]
