"""Choosing the device and the compute precision."""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as given (checked to exist), else CUDA if available, else Apple MPS, else CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'cpu', 'cuda', 'cuda:1' or 'mps' (or "
            "leave it out to use the first available)."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "has no CUDA support" if torch.version.cuda is None else "sees no CUDA GPU"
            raise ValueError(
                f"device={str(device)!r}, but this torch {torch.__version__} {built}. Use "
                "device='cpu', or install a CUDA build of torch on a machine with a GPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r}, but only {torch.cuda.device_count()} CUDA GPU(s) "
                "are visible."
            )
    if device.type == "mps" and not _mps_available():
        raise ValueError("device='mps', but Apple's MPS backend is not available here.")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The autocast precision: ``dtype`` as given, else bf16 on CUDA (fp16 without bf16
    support) and float32 elsewhere."""
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            try:
                dtype = _DTYPES[str(dtype).lower()]
            except KeyError:
                raise ValueError(f"dtype={dtype!r}; use one of {sorted(_DTYPES)}.") from None
        if dtype == torch.float16 and device.type == "cpu":
            raise ValueError(
                "dtype='float16' is not supported on CPU; use 'bfloat16' or 'float32'."
            )
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
