"""Pooling kernels: hidden states of a padded batch → cell and gene embeddings (pure torch)."""

from __future__ import annotations

import torch


def gene_positions(lengths: torch.Tensor, width: int, special_tokens: bool) -> torch.Tensor:
    """Boolean mask of gene positions: non-padding, without ``<cls>``/``<eos>`` on V2."""
    positions = torch.arange(width, device=lengths.device)[None, :]
    if special_tokens:
        return (positions >= 1) & (positions < lengths[:, None] - 1)
    return positions < lengths[:, None]


def cls_pool(hidden: torch.Tensor) -> torch.Tensor:
    """The ``<cls>`` position's embedding (V2 models)."""
    return hidden[:, 0, :]


def mean_pool(hidden: torch.Tensor, lengths: torch.Tensor, special_tokens: bool) -> torch.Tensor:
    """Mean over each cell's gene positions, ``<cls>``/``<eos>`` and padding excluded."""
    mask = gene_positions(lengths.to(hidden.device), hidden.shape[1], special_tokens)
    weights = mask.to(hidden.dtype)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)


def pool(
    hidden: torch.Tensor, lengths: torch.Tensor, pooling: str, special_tokens: bool
) -> torch.Tensor:
    """Cell embeddings of a batch: ``"cls"`` or ``"mean"`` pooling."""
    if pooling == "cls":
        return cls_pool(hidden)
    return mean_pool(hidden, lengths, special_tokens)


def accumulate_genes(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    special_tokens: bool,
    sums: torch.Tensor,
    counts: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> None:
    """Add each gene position's embedding to ``sums[token]`` and count it in ``counts[token]``.

    Dividing ``sums`` by ``counts`` afterwards gives each gene's contextual embedding
    averaged over the cells that express it (Geneformer's gene ``mean_pool``). With
    ``offsets`` (one per cell), a cell's genes go to ``sums[offset + token]`` instead, and
    cells with a negative offset are left out: e.g. ``group * vocabulary size`` keeps one
    block of sums per group of cells.
    """
    mask = gene_positions(lengths.to(hidden.device), hidden.shape[1], special_tokens)
    ids = input_ids.to(hidden.device)
    if offsets is not None:
        offsets = offsets.to(hidden.device)
        mask &= offsets[:, None] >= 0
        ids = ids + offsets[:, None]
    tokens = ids[mask]
    sums.index_add_(0, tokens, hidden[mask].to(sums.dtype))
    counts.index_add_(0, tokens, torch.ones_like(tokens, dtype=counts.dtype))
