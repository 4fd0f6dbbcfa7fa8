"""Scores of in silico perturbation (pure torch): cosine shifts of cell and gene embeddings."""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-8  # torch.nn.CosineSimilarity's default, as the reference uses


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (broadcasting), like ``torch.nn.CosineSimilarity(dim=-1)``."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=EPS)


def state_shifts(
    perturbed: torch.Tensor, original: torch.Tensor, states: torch.Tensor
) -> torch.Tensor:
    """``cos(perturbed, E_S) - cos(original, E_S)`` for every copy and state: (copies, states).

    ``original`` holds each copy's original embedding (copies × hidden).
    """
    return cosine(perturbed[:, None, :], states[None]) - cosine(original[:, None, :], states[None])


def aligned_gene_cosines(
    perturbed_hidden: torch.Tensor,
    original_hidden: torch.Tensor,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> torch.Tensor:
    """Cosine between each gene's embedding in a perturbed copy and in the original.

    ``pairs`` = (copy index, position in the copy, position in the original), one entry per
    gene present in both sequences (perturbed genes excluded).
    """
    copy, pos_p, pos_o = (torch.as_tensor(x, device=perturbed_hidden.device) for x in pairs)
    return cosine(perturbed_hidden[copy, pos_p], original_hidden[pos_o])


def alignment(
    originals: np.ndarray, copies: list[np.ndarray], targets: list[np.ndarray], offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match the genes shared by each copy and its original, perturbed genes left out.

    Returns (copy index, position in copy, position in original, token); positions include
    ``offset`` (1 when a ``<cls>`` token precedes the genes).
    """
    lookup = np.full(
        int(max(originals.max(initial=0), *(c.max(initial=0) for c in copies))) + 1,
        -1,
        dtype=np.int64,
    )
    lookup[originals] = np.arange(len(originals))
    out_copy, out_p, out_o, out_tok = [], [], [], []
    for j, (seq, perturbed) in enumerate(zip(copies, targets, strict=True)):
        keep = ~np.isin(seq, perturbed)
        positions = np.flatnonzero(keep)
        tokens = seq[keep]
        in_original = lookup[tokens]
        shared = in_original >= 0
        out_copy.append(np.full(int(shared.sum()), j))
        out_p.append(positions[shared] + offset)
        out_o.append(in_original[shared] + offset)
        out_tok.append(tokens[shared])
    return tuple(np.concatenate(x).astype(np.int64) for x in (out_copy, out_p, out_o, out_tok))
