"""The compiled (numba) and NumPy rank-value encodings give the same tokens, ties included."""

from __future__ import annotations

import re
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgf
from scgf.pp import InputDataError, _rank_compiled, _rank_encoding
from scgf.pp._rank_encoding import ChunkEncoder, CsrRows, GeneAggregator
from tests.conftest import DATA, needs_data, needs_dicts, real_datasets

pytest.importorskip("numba")


def assert_same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.int32
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def encode_both(counts, n_counts, column_tokens, vocab, *, context=None, chunk=997):
    """Token matrices of both implementations, chunk by chunk."""
    context = context or vocab.context_size
    cls_id, eos_id = (vocab.cls_id, vocab.eos_id) if vocab.special_tokens else (None, None)
    dtype = np.result_type(counts.dtype, np.float32)
    aggregator = GeneAggregator.build(column_tokens, vocab.inverse_median, dtype)
    out = {}
    for kernel in ("numpy", "numba"):
        encoder = ChunkEncoder(
            aggregator, context=context, cls_id=cls_id, eos_id=eos_id, kernel=kernel
        )
        assert encoder.compiled == (kernel == "numba")
        pieces = []
        for start in range(0, counts.shape[0], chunk):
            stop = min(start + chunk, counts.shape[0])
            totals = None if n_counts is None else n_counts[start:stop]
            tokens, _ = encoder.encode(CsrRows.of(counts, start, stop), totals)
            pieces.append(tokens)
        out[kernel] = sp.vstack(pieces, format="csr")
    return out["numpy"], out["numba"]


SYMBOL_DATASETS = ["pbmc_ifnb_kang2018_2000", "immune_celltypist_559", "tcell_wu2020_200"]


@needs_dicts
@needs_data
@pytest.mark.parametrize("version", ["V2", "V1"])
@pytest.mark.parametrize(
    ("path", "gene_key"),
    [(p, "ensembl_id") for p in real_datasets()]
    + [(p, None) for p in real_datasets() if p.stem in SYMBOL_DATASETS],
    ids=lambda x: x.stem if hasattr(x, "stem") else ("ensembl" if x else "symbols"),
)
def test_compiled_equals_numpy_on_real_cells(path, gene_key, version, vocab_v1, vocab_v2):
    vocab = vocab_v2 if version == "V2" else vocab_v1
    adata = ad.read_h5ad(path)
    ids = adata.var[gene_key] if gene_key else adata.var_names
    column_tokens = vocab.map_genes(np.asarray(ids, dtype=object))
    counts = sp.csr_matrix(adata.X)
    n_counts = adata.obs["n_counts"].to_numpy() if "n_counts" in adata.obs else None
    numpy_tokens, numba_tokens = encode_both(counts, n_counts, column_tokens, vocab)
    assert_same_csr(numpy_tokens, numba_tokens)
    # and with row sums for totals (float64 scaling instead of float32)
    numpy_tokens, numba_tokens = encode_both(counts, None, column_tokens, vocab, chunk=256)
    assert_same_csr(numpy_tokens, numba_tokens)


def tied_cells(vocab, n_cells=40, seed=0):
    """Cells whose genes share medians and counts, in shuffled column order.

    Each cell holds 120 genes: all genes of the largest group of equal medians (72 in V2)
    plus others, with small counts, so that many scores tie exactly and cells exceed the
    sizes the compiled sort leaves to insertion sort.
    """
    medians = pd.Series(vocab.medians).loc[list(vocab.gene_ids)]
    shared = medians[medians.duplicated(keep=False)]
    largest = shared[shared == shared.value_counts().index[0]].index.tolist()
    others = [g for g in vocab.gene_ids if g not in shared.index][: 120 - len(largest)]
    genes = np.array(largest + others)
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, size=(n_cells, len(genes))).astype(np.float32)
    counts[rng.random(counts.shape) < 0.1] = 0
    order = rng.permutation(len(genes))
    return sp.csr_matrix(counts[:, order]), genes[order]


@needs_dicts
def test_ties_are_ordered_by_token_id_in_both(vocab_v2):
    counts, genes = tied_cells(vocab_v2)
    column_tokens = vocab_v2.map_genes(genes)
    n_counts = np.asarray(counts.sum(axis=1)).ravel().astype(np.float32)
    numpy_tokens, numba_tokens = encode_both(counts, n_counts, column_tokens, vocab_v2)
    assert_same_csr(numpy_tokens, numba_tokens)
    # the documented order: descending score, equal scores by ascending token id
    inverse_median = vocab_v2.inverse_median[column_tokens]
    for i in range(counts.shape[0]):
        row = counts[i].toarray().ravel()
        present = np.flatnonzero(row)
        scaled = (row[present] * (np.float32(1) / n_counts[i])) * np.float32(10_000)
        scores = scaled.astype(np.float64) * inverse_median[present]
        tokens = column_tokens[present]
        expected = tokens[np.lexsort((tokens, -scores))]
        got = numba_tokens[i].data[1:-1]
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(scores)) < len(scores)  # the cell does hold ties


@pytest.mark.parametrize("shape", ["clumped", "wide", "equal", "tiny"])
def test_sort_kernel_orders_exactly(shape):
    """Scores spread or bunched in any way are ordered by (score desc, slot asc)."""
    assert _rank_compiled._compiled_kernel() is not None  # compiles the helpers too
    rng = np.random.default_rng(1)
    n = {"clumped": 3000, "wide": 2000, "equal": 300, "tiny": 7}[shape]
    if shape == "clumped":  # most scores within a hair of each other, a few far away
        scores = 1.0 + rng.integers(0, 200, n) * 1e-13
        scores[:10] = rng.uniform(1e-6, 1e6, 10)
    elif shape == "wide":
        scores = np.exp(rng.uniform(-700, 700, n))
        scores[:50] = 0.0
        scores[50:60] = np.inf
    elif shape == "equal":
        scores = np.full(n, 0.25)
    else:
        scores = rng.choice([1.0, 2.0, 2.0], n)
    slots = rng.permutation(50_000)[:n].astype(np.int64)
    bits = scores.view(np.uint64).copy()
    out_bits, out_slots = np.empty_like(bits), np.empty_like(slots)
    counts = np.empty((1 << _rank_compiled._RADIX_BITS) + 1, dtype=np.int32)
    keys = np.empty(n, dtype=np.int32)
    stack = np.empty(2 * (n // _rank_compiled._INSERTION_MAX + 2), dtype=np.int64)
    _rank_compiled._nb_sort_cell(
        bits, slots.copy(), n, bits.max(), bits.min(), out_bits, out_slots, counts, keys, stack
    )
    np.testing.assert_array_equal(out_slots, slots[np.lexsort((slots, -scores))])


@pytest.fixture(params=["numpy", "numba"])
def kernel(request, monkeypatch):
    monkeypatch.setattr(_rank_encoding, "KERNEL", request.param)
    return request.param


@needs_dicts
@needs_data
@pytest.mark.parametrize(
    "dtypes",
    [("float32", "float32"), ("float32", "float64"), ("int32", "int64"), ("float64", None)],
    ids=lambda d: f"X_{d[0]}-n_counts_{d[1]}",
)
def test_tokenize_same_for_every_dtype(dtypes, vocab_v2, monkeypatch):
    """Both paths agree through ``tokenize`` whatever the dtypes of X and n_counts."""
    adata = ad.read_h5ad(DATA / "immune_celltypist_559.h5ad")  # symbols, summed genes
    x_dtype, n_dtype = dtypes
    adata.X = adata.X.astype(x_dtype)
    if n_dtype is None:
        del adata.obs["n_counts"]
    else:
        adata.obs["n_counts"] = adata.obs["n_counts"].astype(n_dtype)
    out = {}
    for kernel in ("numpy", "numba"):
        monkeypatch.setattr(_rank_encoding, "KERNEL", kernel)
        out[kernel] = scgf.pp.tokenize(adata, model=vocab_v2, inplace=False, chunk_size=200)
    assert_same_csr(out["numpy"], out["numba"])


@needs_dicts
@needs_data
def test_backed_file_with_compiled_kernel(vocab_v1, tmp_path, monkeypatch):
    adata = ad.read_h5ad(DATA / "immune_celltypist_559.h5ad")
    expected = scgf.pp.tokenize(adata, model=vocab_v1, inplace=False)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    monkeypatch.setattr(_rank_encoding, "KERNEL", "numba")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r+")
    scgf.pp.tokenize(backed, model=vocab_v1, chunk_size=128)
    assert_same_csr(expected, backed.obsm["gf_tokens"][:])
    backed.file.close()


@needs_dicts
@needs_data
@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (lambda x: -x, "negative values"),
        (lambda x: x + 0.5, "non-integer values"),
        (lambda x: x * np.nan, "non-finite values"),
    ],
    ids=["negative", "fractional", "nan"],
)
def test_compiled_kernel_reports_bad_values(kernel, transform, message, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    counts = adata.X.tocsr()
    counts.data[500:] = transform(counts.data[500:])
    adata.X = counts
    with pytest.raises(InputDataError, match=message) as raised:
        scgf.pp.tokenize(adata, model=vocab_v2, chunk_size=64)
    row = int(np.searchsorted(counts.indptr, 500, side="right") - 1)
    assert repr(adata.obs_names[row]) in str(raised.value)
    assert "gf_tokens" not in adata.obsm


@needs_dicts
@needs_data
def test_unchecked_values_encode_as_numpy_does(vocab_v2):
    """Values the kernel would stop at (here fractional) encode like NumPy with check=False."""
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    rows = CsrRows.of(sp.csr_matrix(adata.X * np.float32(0.37)))
    aggregator = GeneAggregator.build(
        vocab_v2.map_genes(adata.var_names), vocab_v2.inverse_median, np.float32
    )
    args = {"context": 4096, "cls_id": vocab_v2.cls_id, "eos_id": vocab_v2.eos_id}
    n_counts = adata.obs["n_counts"].to_numpy()
    compiled = ChunkEncoder(aggregator, kernel="numba", **args)
    assert compiled.encode(rows, n_counts)[0] is None
    tokens, _ = compiled.encode(rows, n_counts, check=False)
    expected, _ = ChunkEncoder(aggregator, kernel="numpy", **args).encode(rows, n_counts)
    assert_same_csr(expected, tokens)


@needs_dicts
def test_row_sums_are_exact_beyond_float32_integers(vocab_v2):
    """Totals above 2**24 (bulk-like depth) are summed exactly on both paths."""
    genes = list(vocab_v2.gene_ids[:40])
    counts = np.full((3, 40), 2.0**23 + 1, dtype=np.float32)
    counts[:, ::3] = 7
    rows = CsrRows.of(sp.csr_matrix(counts))
    aggregator = GeneAggregator.build(
        vocab_v2.map_genes(genes), vocab_v2.inverse_median, np.float32
    )
    out = {}
    for kernel in ("numpy", "numba"):
        encoder = ChunkEncoder(aggregator, context=4096, kernel=kernel)
        out[kernel] = encoder.encode(rows, None)
    np.testing.assert_array_equal(out["numpy"][1], counts.astype(np.float64).sum(axis=1))
    np.testing.assert_array_equal(out["numba"][1], out["numpy"][1])
    assert_same_csr(out["numpy"][0], out["numba"][0])


@needs_dicts
@needs_data
def test_compiled_kernel_reports_bad_totals(kernel, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    adata.obs["n_counts"] = adata.obs["n_counts"].astype(np.float64)
    adata.obs.iloc[300, adata.obs.columns.get_loc("n_counts")] = 0.0
    with pytest.raises(InputDataError, match=re.escape(repr(adata.obs_names[300]))):
        scgf.pp.tokenize(adata, model=vocab_v2, chunk_size=64)


def test_kernel_choice(monkeypatch):
    aggregator = GeneAggregator.build(np.array([5, -1, 7]), np.ones(10), np.float32)
    assert not ChunkEncoder(aggregator, context=8, kernel="numpy").compiled
    assert ChunkEncoder(aggregator, context=8, kernel="numba").compiled
    big = _rank_compiled.COMPILED_MIN_ENTRIES
    assert ChunkEncoder(aggregator, context=8, n_entries=big).compiled
    with pytest.raises(ValueError, match="kernel must be"):
        ChunkEncoder(aggregator, context=8, kernel="fast")


def test_import_scgf_leaves_numba_unloaded():
    code = (
        "import sys, numpy as np, scipy.sparse as sp, scgf\n"
        "from scgf.pp._rank_encoding import ChunkEncoder, CsrRows, GeneAggregator\n"
        "agg = GeneAggregator.build(np.array([5, 6]), np.ones(10), np.float32)\n"
        "rows = CsrRows.of(sp.csr_matrix(np.array([[1.0, 2.0]], dtype=np.float32)))\n"
        "ChunkEncoder(agg, context=8, n_entries=2).encode(rows, None)\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
