"""Length-sorted batches filled up to a token budget, from a token matrix or from sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp


def plan_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Group cells into batches, longest first, so that ``batch size × longest ≤ budget``.

    Sorting by length means each batch pads only to its own longest cell, which is close to
    every other cell in it. Cells of length 0 are left out; cells of equal length keep their
    order.

    Parameters
    ----------
    lengths
        Tokens per cell.
    token_budget
        Most padded tokens per batch; a cell longer than the budget gets a batch of its own.

    Returns
    -------
    Arrays of cell indices, one per batch.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    batches = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, token_budget // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


class TokenSource(Protocol):
    """Cells to run: their lengths, and right-padded ``input_ids`` for any rows of them."""

    lengths: np.ndarray

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids (rows × longest, int64, 0-padded), lengths (int64))`` of ``rows``."""
        ...


class TokenMatrix:
    """A CSR token matrix (row i = cell i's tokens at columns 0..len-1) as a token source."""

    def __init__(self, tokens: sp.csr_matrix):
        self.tokens = tokens
        self.lengths = np.diff(tokens.indptr)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block = self.tokens[rows]
        lengths = np.diff(block.indptr).astype(np.int64)
        ids = np.zeros((len(rows), int(lengths.max(initial=1))), dtype=np.int64)
        row_of = np.repeat(np.arange(len(rows)), lengths)
        ids[row_of, block.indices] = block.data
        return ids, lengths


class TokenSequences:
    """A list of token sequences (e.g. perturbed copies of one cell) as a token source."""

    def __init__(self, sequences: Sequence[np.ndarray]):
        self.sequences = sequences
        self.lengths = np.array([len(s) for s in sequences], dtype=np.int64)

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = self.lengths[rows]
        ids = np.zeros((len(rows), int(lengths.max(initial=1))), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : lengths[i]] = self.sequences[row]
        return ids, lengths


def as_source(tokens) -> TokenSource:
    """A token matrix (CSR) or a list of sequences as a :class:`TokenSource`."""
    if sp.issparse(tokens):
        return TokenMatrix(tokens.tocsr())
    if isinstance(tokens, TokenMatrix | TokenSequences):
        return tokens
    return TokenSequences(list(tokens))
