"""Kernels of Geneformer's rank-value encoding. They see arrays, never AnnData.

A cell's tokens are its vocabulary genes ordered by ``count / n_counts * 10000 / median``
(descending), truncated to the model's context, wrapped in ``<cls>``…``<eos>`` for V2.
The arithmetic follows the reference's order of operations and dtypes bit for bit: the
division by ``n_counts`` is a multiplication by its reciprocal in ``n_counts``'s dtype, the
division by the median a multiplication by its float64 reciprocal. Genes with exactly equal
scores are ordered by ascending token id (= ascending Ensembl ID), so the encoding is
deterministic and independent of the order of the input's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 10_000


@dataclass(frozen=True)
class GeneAggregator:
    """Maps the input's columns onto the vocabulary genes they measure.

    ``matrix`` (n_vars × n_present) sums every input column into its vocabulary gene, so
    duplicated IDs, retired IDs and symbols of one gene are added up; ``tokens`` holds the
    present genes' token ids in ascending order and ``inverse_median`` their ``1/median``.
    """

    matrix: sp.csr_matrix
    tokens: np.ndarray
    inverse_median: np.ndarray

    @classmethod
    def build(
        cls, column_tokens: np.ndarray, inverse_median_by_token: np.ndarray, dtype: np.dtype
    ) -> GeneAggregator:
        """Build the aggregator from each column's token id (``-1`` for genes to ignore)."""
        column_tokens = np.asarray(column_tokens, dtype=np.int64)
        used = np.flatnonzero(column_tokens >= 0)
        tokens, target = np.unique(column_tokens[used], return_inverse=True)
        matrix = sp.csr_matrix(
            (np.ones(len(used), dtype=dtype), (used, target)),
            shape=(len(column_tokens), len(tokens)),
        )
        return cls(matrix, tokens, inverse_median_by_token[tokens])

    @property
    def sums_duplicates(self) -> bool:
        return self.matrix.nnz > len(self.tokens)


def scale_counts(
    counts: sp.csr_matrix, rows: np.ndarray, n_counts: np.ndarray, inverse_median: np.ndarray
) -> np.ndarray:
    """Scores ``count / n_counts * 10000 / median`` of a CSR matrix's stored entries.

    Follows the reference's arithmetic: ``counts * (1 / n_counts)`` in the promoted dtype of
    the counts and ``n_counts``, times 10000, then times ``1 / median`` in float64.
    ``rows`` gives each stored entry's row.
    """
    with np.errstate(divide="ignore"):  # cells with a zero total have no entries
        reciprocal = np.true_divide(1.0, n_counts)
    per_cell = (counts.data * reciprocal[rows]) * TARGET_SUM
    return per_cell.astype(np.float64) * inverse_median[counts.indices]


def ranked_tokens(rows: np.ndarray, scores: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Tokens ordered by row, then descending score, then ascending token id.

    Scores are compared exactly: a first sort turns them into dense integer ranks (equal
    scores, equal rank), so that a single integer key ``(row, rank, token)`` sorts all cells
    at once with NumPy's SIMD sort. The key is unique and carries the token in its low bits,
    so the sorted keys are decoded directly.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_score = np.argsort(-scores)
    ordered = scores[by_score]
    new_value = np.empty(n, dtype=np.int64)
    new_value[0] = 0
    np.not_equal(ordered[1:], ordered[:-1], out=new_value[1:], casting="unsafe")
    rank = np.empty(n, dtype=np.int64)
    rank[by_score] = np.cumsum(new_value)
    token_bits = int(tokens.max()).bit_length()
    rank_bits = int(rank[by_score[-1]]).bit_length()
    row_bits = int(rows[-1]).bit_length()
    if token_bits + rank_bits + row_bits > 63:  # pragma: no cover - enormous chunks only
        return tokens[np.lexsort((tokens, rank, rows))]
    key = (rows.astype(np.int64) << (rank_bits + token_bits)) | (rank << token_bits) | tokens
    key.sort()
    return key & ((1 << token_bits) - 1)


def encode_chunk(
    counts: sp.csr_matrix,
    n_counts: np.ndarray,
    aggregator: GeneAggregator,
    *,
    max_genes: int,
    cls_id: int | None = None,
    eos_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-value encode a chunk of cells.

    Parameters
    ----------
    counts
        Raw counts, cells × input genes (CSR).
    n_counts
        Each cell's total count (the reference uses the user's ``n_counts`` as given).
    aggregator
        The input-column → vocabulary-gene map.
    max_genes
        Genes kept per cell (context minus special tokens).
    cls_id, eos_id
        Special tokens wrapped around each non-empty cell (V2), or ``None`` (V1).

    Returns
    -------
    ``(lengths, tokens)``: each cell's token count and all cells' tokens concatenated.
    Cells without vocabulary genes get length 0 (no special tokens).
    """
    summed = (counts @ aggregator.matrix).tocsr()
    summed.eliminate_zeros()
    per_row = np.diff(summed.indptr)
    rows = np.repeat(np.arange(summed.shape[0]), per_row)
    scores = scale_counts(summed, rows, n_counts, aggregator.inverse_median)
    ranked = ranked_tokens(rows, scores, aggregator.tokens[summed.indices])

    n_genes = np.minimum(per_row, max_genes)
    if per_row.max(initial=0) > max_genes:  # truncate to the context
        position = np.arange(len(ranked)) - np.repeat(summed.indptr[:-1], per_row)
        ranked = ranked[position < max_genes]
    if cls_id is None:
        return n_genes.astype(np.int64), ranked.astype(np.int32)
    return _wrap_special(n_genes, ranked, cls_id, eos_id)


def _wrap_special(
    n_genes: np.ndarray, ranked: np.ndarray, cls_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``<cls>`` before and ``<eos>`` after each non-empty cell's genes."""
    nonempty = n_genes > 0
    lengths = n_genes + 2 * nonempty
    out = np.empty(int(lengths.sum()), dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gene_slot = np.repeat(starts + 1, n_genes) + (
        np.arange(len(ranked)) - np.repeat(np.cumsum(n_genes) - n_genes, n_genes)
    )
    out[gene_slot] = ranked
    out[starts[nonempty]] = cls_id
    out[(starts + lengths - 1)[nonempty]] = eos_id
    return lengths.astype(np.int64), out


def tokens_to_csr(lengths: np.ndarray, tokens: np.ndarray, context_size: int) -> sp.csr_matrix:
    """Store token sequences as a CSR matrix: row i holds cell i's tokens at columns 0..len-1."""
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    positions = np.arange(len(tokens)) - np.repeat(indptr[:-1], lengths)
    indptr = indptr.astype(np.int32) if indptr[-1] < 2**31 else indptr
    return sp.csr_matrix(
        (tokens.astype(np.int32), positions.astype(indptr.dtype), indptr),
        shape=(len(lengths), context_size),
    )
