"""Kernels of Geneformer's rank-value encoding. They see arrays, never AnnData.

A cell's tokens are its vocabulary genes ordered by ``count / n_counts * 10000 / median``
(descending), truncated to the model's context, wrapped in ``<cls>``…``<eos>`` for V2.
The arithmetic follows the reference's order of operations and dtypes bit for bit: the
division by ``n_counts`` is a multiplication by its reciprocal in ``n_counts``'s dtype, the
division by the median a multiplication by its float64 reciprocal. Genes with exactly equal
scores are ordered by ascending token id (= ascending Ensembl ID), so the encoding is
deterministic and independent of the order of the input's columns.

Two implementations give the same tokens: a compiled kernel (numba, imported only when it is
used) that sums, scores and sorts one cell at a time, for large inputs; and a vectorised NumPy
one, for small inputs (where loading the compiled kernel would cost more than it saves) and
when numba is missing. :class:`ChunkEncoder` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ._rank_compiled import TARGET_SUM, Kernel, select_kernel


@dataclass(frozen=True)
class GeneAggregator:
    """Maps the input's columns onto the vocabulary genes they measure.

    ``matrix`` (n_vars × n_present) sums every input column into its vocabulary gene, so
    duplicated IDs, retired IDs and symbols of one gene are added up; ``tokens`` holds the
    present genes' token ids in ascending order and ``inverse_median`` their ``1/median``;
    ``column_slot`` gives each input column's position in ``tokens`` (``-1``: ignored).
    """

    matrix: sp.csr_matrix
    tokens: np.ndarray
    inverse_median: np.ndarray
    column_slot: np.ndarray

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
        column_slot = np.full(len(column_tokens), -1, dtype=np.int32)
        column_slot[used] = target
        return cls(matrix, tokens, inverse_median_by_token[tokens], column_slot)

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


class CsrRows(NamedTuple):
    """Consecutive rows of a CSR matrix, as its arrays.

    Taking rows of an in-memory matrix this way costs no copy: slicing copies them, and so
    does scipy's constructor when handed views of larger arrays.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int

    @classmethod
    def of(cls, matrix: sp.csr_matrix, start: int = 0, stop: int | None = None) -> CsrRows:
        """Rows ``start:stop`` of ``matrix`` (views of its arrays)."""
        stop = matrix.shape[0] if stop is None else stop
        lo, hi = matrix.indptr[start], matrix.indptr[stop]
        return cls(
            matrix.indptr[start : stop + 1] - lo,
            matrix.indices[lo:hi],
            matrix.data[lo:hi],
            matrix.shape[1],
        )

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.indptr) - 1

    def to_scipy(self) -> sp.csr_matrix:
        """The rows as a scipy CSR matrix."""
        return sp.csr_matrix(
            (self.data, self.indices, self.indptr), shape=(self.n_rows, self.n_cols)
        )


#: Implementation used by :class:`ChunkEncoder`: ``"auto"`` picks by input size, the others
#: force one (tests use this to compare them).
KERNEL: Kernel = "auto"


class ChunkEncoder:
    """Encodes chunks of cells into token matrices, for one gene mapping and context.

    Parameters
    ----------
    aggregator
        The input-column → vocabulary-gene map.
    context
        Tokens per cell including special tokens (the token matrix's width).
    cls_id, eos_id
        Special tokens wrapped around each non-empty cell (V2), or ``None`` (V1).
    n_entries
        Stored entries of the whole input (``None``: unknown), to choose the implementation.
    kernel
        ``"auto"``, ``"numba"`` or ``"numpy"``; defaults to :data:`KERNEL`.
    """

    def __init__(
        self,
        aggregator: GeneAggregator,
        *,
        context: int,
        cls_id: int | None = None,
        eos_id: int | None = None,
        n_entries: int | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.context = context
        self.cls_id, self.eos_id = cls_id, eos_id
        self.max_genes = context - 2 * (cls_id is not None)
        self._kernel = select_kernel(kernel or KERNEL, n_entries)
        if aggregator.matrix.dtype not in (np.float32, np.float64):  # pragma: no cover
            self._kernel = None  # exotic count dtypes (e.g. longdouble) stay with NumPy
        self._slot_tokens = aggregator.tokens.astype(np.int32)

    @property
    def compiled(self) -> bool:
        """Whether chunks go through the compiled kernel, which also checks every value."""
        return self._kernel is not None

    def encode(
        self, rows: CsrRows, n_counts: np.ndarray | None, *, check: bool = True
    ) -> tuple[sp.csr_matrix | None, np.ndarray]:
        """Token matrix (CSR, ``n_cells × context``, int32) of a chunk of cells' raw counts.

        Row ``i`` holds cell ``i``'s tokens at columns ``0 … length-1``; cells without
        vocabulary genes have empty rows.

        Parameters
        ----------
        rows
            The cells' raw counts.
        n_counts
            Each cell's total count; ``None`` for the row sums.
        check
            With the compiled kernel, stop at the first stored value that is not a finite,
            non-negative integer.

        Returns
        -------
        ``(tokens, n_counts)``: the token matrix and the totals used. ``tokens`` is ``None``
        when the compiled kernel stopped at such a value. The NumPy path never checks values
        (run ``check_raw_counts`` first).
        """
        if n_counts is not None:
            n_counts = np.asarray(n_counts)
            if n_counts.dtype.kind not in "biuf" or n_counts.dtype.itemsize > 8:
                n_counts = n_counts.astype(np.float64)  # e.g. object or longdouble totals
        if self._kernel is None:
            counts = rows.to_scipy()
            if n_counts is None:  # in float64 throughout, as the compiled kernel sums them
                n_counts = np.asarray(counts.astype(np.float64).sum(axis=1)).ravel()
            lengths, tokens = encode_chunk(
                counts,
                n_counts,
                self.aggregator,
                max_genes=self.max_genes,
                cls_id=self.cls_id,
                eos_id=self.eos_id,
            )
            return tokens_to_csr(lengths, tokens, self.context), n_counts

        data = rows.data.astype(self.aggregator.matrix.dtype, copy=False)  # summation dtype
        if n_counts is None:
            reciprocal = np.empty(rows.n_rows, dtype=np.float64)  # filled in by the kernel
        else:
            with np.errstate(divide="ignore"):  # cells with a zero total have no entries
                reciprocal = np.true_divide(1.0, n_counts)
        n_cells = rows.n_rows
        per_row = np.diff(rows.indptr)
        special = self.cls_id is not None
        bound = int(np.minimum(per_row, self.max_genes).sum())
        bound += 2 * special * int(np.count_nonzero(per_row))
        index = np.int32 if bound < 2**31 else np.int64
        tokens = np.empty(bound, dtype=np.int32)
        positions = np.empty(bound, dtype=index)
        indptr = np.empty(n_cells + 1, dtype=index)
        sums = np.empty(n_cells, dtype=np.float64)
        total, first_bad = self._kernel(
            rows.indptr.astype(np.int64),
            rows.indices.astype(np.int32, copy=False),  # one compiled variant; n_vars < 2**31
            data,
            self.aggregator.column_slot,
            self._slot_tokens,
            self.aggregator.inverse_median,
            reciprocal.astype(np.float64),  # exact
            n_counts is None,
            check,
            # NumPy scales in float32 when both the counts and the reciprocals are float32
            # or narrower, else in float64.
            np.result_type(data.dtype, reciprocal.dtype) == np.float32,
            int(self.max_genes),  # plain ints: one compiled variant
            int(self.cls_id) if special else -1,
            int(self.eos_id) if special else -1,
            tokens,
            positions,
            indptr,
            sums,
        )
        n_counts = sums if n_counts is None else n_counts
        if first_bad >= 0:
            return None, n_counts
        tokens, positions = tokens[:total], positions[:total]
        if total < bound // 2:  # many unmapped entries: do not keep the spare buffer alive
            tokens, positions = tokens.copy(), positions.copy()
        matrix = sp.csr_matrix((tokens, positions, indptr), shape=(n_cells, self.context))
        return matrix, n_counts
