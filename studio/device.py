"""Device and dtype choice: cuda > mps > cpu, with `STUDIO_DEVICE` overriding."""

from __future__ import annotations

import os

import torch

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the argument, else `STUDIO_DEVICE`, else cuda > mps > cpu.

    An explicit device that is not available raises instead of silently falling back.
    """
    name = device if device is not None else os.environ.get("STUDIO_DEVICE") or None
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {name!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {name!r} but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"`device` is {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"`device` is {name!r} but MPS is not available on this machine")
    return dev


def pick_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """Working dtype: bf16 on GPUs that support it (fp16 otherwise), fp32 on CPU.

    `precision` ('fp32', 'fp16', 'bf16', or None for automatic) overrides; half precision on CPU
    is refused because CPU kernels for it are slow or missing.
    """
    if precision is not None:
        if precision not in _PRECISIONS:
            raise ValueError(f"`precision` must be one of {sorted(_PRECISIONS)} or None, got {precision!r}")
        dtype = _PRECISIONS[precision]
        if device.type == "cpu" and dtype != torch.float32:
            raise ValueError(f"`precision` {precision!r} is not supported on the CPU; use 'fp32'")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _PRECISIONS.items()}[dtype]
