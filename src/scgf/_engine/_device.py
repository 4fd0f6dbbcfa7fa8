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
    """``device`` as given, else CUDA if available, else Apple MPS, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
