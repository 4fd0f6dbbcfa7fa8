"""Splitting cells across processes started by ``torchrun`` and merging their results."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world size)``; joins the process group ``torchrun`` prepared, if any."""
    if (
        dist.is_available()
        and not dist.is_initialized()
        and int(os.environ.get("WORLD_SIZE", 1)) > 1
    ):
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device() -> str | None:
    """The GPU of this process under ``torchrun`` (``cuda:LOCAL_RANK``), else ``None``."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``n`` cells that process ``rank`` handles."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


def sum_across(array: np.ndarray) -> np.ndarray:
    """Element-wise sum of ``array`` over all processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return array
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def gather_records(records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate every process's record arrays, in rank order (identity without a process
    group). Processes with no records contribute nothing."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records
    everything: list = [None] * dist.get_world_size()
    dist.all_gather_object(everything, records)
    parts = [r for r in everything if r]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
