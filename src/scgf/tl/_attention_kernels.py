"""Attention kernels (pure torch/numpy, no AnnData): per-cell attention entries, gene-pair
sums reduced on the device, and the top-k pairs of each gene.

Genes are numbered compactly here: ``0..n_genes-1`` over the vocabulary tokens that some
variable of the AnnData maps to (``-1`` elsewhere); the shell maps them back to ``var``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._pooling import gene_positions

# Gene-pair sums are kept in dense (n_genes × n_genes) float32 sums and int32 counts on the
# device up to this many genes (16384² × 8 bytes = 2 GiB; a 10x gene set mapped to the
# vocabulary is ~12-17k genes); above it, in a sparse accumulator whose memory grows with the
# gene pairs that occur together in some cell. Measured on 2 CPU cores, 500 cells of ~600
# tokens: dense ~3× faster than sparse, whose sorting dominates.
DENSE_MAX_GENES = 16384
# Elements of (cells × positions × positions) handled at once when reducing gene pairs.
PAIR_CHUNK = 1 << 24
# Sparse pending entries are merged into the running sums once they outnumber them (and this).
MERGE_MIN = 1 << 22


def batch_genes(
    input_ids: torch.Tensor, lengths: torch.Tensor, special_tokens: bool, gene_of_token
) -> torch.Tensor:
    """Compact gene index of every position of a padded batch: (batch, positions), ``-1`` at
    ``<cls>``/``<eos>``, padding and tokens no variable maps to."""
    width = input_ids.shape[1]
    genes = gene_of_token[input_ids]
    keep = gene_positions(lengths.to(input_ids.device), width, special_tokens)
    return torch.where(keep, genes, torch.full_like(genes, -1))


def cell_entries(
    summary: torch.Tensor, genes: torch.Tensor, heads: list[int], keep_heads: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell attention at each gene position: (batch row, gene, values) on the host.

    ``values`` is the mean of ``summary`` (batch, heads, positions) over ``heads``, with
    ``keep_heads`` followed by one column per head of the model: (entries, 1 + heads).
    """
    valid = genes >= 0
    rows, positions = torch.nonzero(valid, as_tuple=True)
    per_head = summary[rows, :, positions]  # (entries, heads)
    mean = per_head[:, heads].mean(1, keepdim=True)
    values = torch.cat([mean, per_head], 1) if keep_heads else mean
    return rows.cpu().numpy(), genes[rows, positions].cpu().numpy(), values.cpu().numpy()


def pair_entries(pairs: torch.Tensor, genes: torch.Tensor, n_genes: int):
    """Yield ``(keys, weights)`` for every ordered pair of positions of each cell, in chunks of
    cells of at most :data:`PAIR_CHUNK` elements: ``key = query * (n_genes + 1) + key_gene``
    (int64) and the attention weight.

    Positions without a gene (``-1``: ``<cls>``, ``<eos>``, padding) take the sentinel gene
    ``n_genes``, so that whole (positions × positions) blocks are added without masking; the
    sentinel's row and column, and the diagonal (a gene's attention to itself), are dropped
    by :func:`top_pairs`.
    """
    batch, width, _ = pairs.shape
    step = max(1, PAIR_CHUNK // max(1, width * width))
    stride = n_genes + 1
    genes = torch.where(genes >= 0, genes, torch.full_like(genes, n_genes))
    for lo in range(0, batch, step):
        g = genes[lo : lo + step]
        keys = g[:, :, None] * stride + g[:, None, :]
        yield keys.reshape(-1), pairs[lo : lo + step].reshape(-1)


class DensePairSums:
    """Gene-pair sums (float32: weights are at most 1, so a mean over n cells keeps ~1e-7 ×
    sqrt(n) relative error) and counts (int32) in dense (n_genes²) tensors on the device."""

    kind = "dense"

    def __init__(self, n_genes: int, device: torch.device):
        self.n_genes = n_genes
        size = (n_genes + 1) ** 2  # with the sentinel gene's row and column
        self.sums = torch.zeros(size, dtype=torch.float32, device=device)
        self.counts = torch.zeros(size, dtype=torch.int32, device=device)

    def add(self, keys: torch.Tensor, weights: torch.Tensor) -> None:
        self.sums.index_add_(0, keys, weights.float())
        self.counts.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, sums, counts)`` of the pairs seen, keys increasing."""
        keys = torch.nonzero(self.counts, as_tuple=True)[0]
        return (
            keys.cpu().numpy(),
            self.sums[keys].double().cpu().numpy(),
            self.counts[keys].cpu().numpy().astype(np.int64),
        )


def coalesce(keys: np.ndarray, sums: np.ndarray, counts: np.ndarray):
    """Sum the entries of equal keys; keys come out sorted."""
    order = np.argsort(keys, kind="stable")
    keys, sums, counts = keys[order], sums[order], counts[order]
    if len(keys) == 0:
        return keys, sums, counts
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(sums, starts), np.add.reduceat(counts, starts)


class SparsePairSums:
    """Gene-pair sums and counts of the pairs that occur, for vocabularies too large for
    :class:`DensePairSums`.

    Each batch is reduced on the device (``torch.unique``: one entry per distinct pair) and
    moved to the host; pending entries are merged into the sorted running sums once they
    outnumber them, so memory stays proportional to the distinct pairs seen and the merging
    work to the entries times a logarithm.
    """

    kind = "sparse"

    def __init__(self, n_genes: int, device: torch.device):
        self.n_genes = n_genes
        self.keys = np.empty(0, np.int64)
        self.sums = np.empty(0, np.float64)
        self.counts = np.empty(0, np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_pending = 0

    def add(self, keys: torch.Tensor, weights: torch.Tensor) -> None:
        unique, inverse = torch.unique(keys, return_inverse=True)
        sums = torch.zeros(len(unique), dtype=torch.float64, device=keys.device)
        sums.index_add_(0, inverse, weights.double())
        counts = torch.bincount(inverse, minlength=len(unique))
        self.pending.append((unique.cpu().numpy(), sums.cpu().numpy(), counts.cpu().numpy()))
        self.n_pending += len(unique)
        if self.n_pending > max(len(self.keys), MERGE_MIN):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        parts = [(self.keys, self.sums, self.counts), *self.pending]
        self.keys, self.sums, self.counts = coalesce(
            *(np.concatenate([p[i] for p in parts]) for i in range(3))
        )
        self.pending, self.n_pending = [], 0

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, sums, counts)`` of the pairs seen, keys increasing."""
        self._merge()
        return self.keys, self.sums, self.counts


def pair_accumulator(n_genes: int, device: torch.device) -> DensePairSums | SparsePairSums:
    """Dense sums up to :data:`DENSE_MAX_GENES` genes, sparse ones above."""
    if n_genes <= DENSE_MAX_GENES:
        return DensePairSums(n_genes, device)
    return SparsePairSums(n_genes, device)


def top_pairs(
    keys: np.ndarray,
    sums: np.ndarray,
    counts: np.ndarray,
    n_genes: int,
    top_k: int,
    min_cells: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query gene's ``top_k`` key genes by mean attention over the cells expressing
    both (pairs seen in fewer than ``min_cells`` cells, a gene with itself and the sentinel
    gene of :func:`pair_entries` left out). ``keys`` increase.

    Returns ``(query, key, mean, n_cells)``, sorted by query gene, then mean descending
    (ties by key gene).
    """
    query, key = np.divmod(keys, n_genes + 1)
    keep = (counts >= min_cells) & (query < n_genes) & (key < n_genes) & (query != key)
    query, key, sums, counts = query[keep], key[keep], sums[keep], counts[keep]
    means = sums / counts
    # Means are in [0, 1]: one float sort by (query, -mean); stable, so ties keep key order.
    order = np.argsort(query * 2.0 + (1.0 - means), kind="stable")
    query, key, means, counts = query[order], key[order], means[order], counts[order]
    starts = np.searchsorted(query, query, side="left")
    rank = np.arange(len(query)) - starts
    keep = rank < top_k
    return query[keep], key[keep], means[keep], counts[keep]
