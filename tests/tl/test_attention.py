"""scgf.tl.attention equals transformers' eager ``output_attentions=True``, cell by cell."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from transformers import BertModel

import scgf
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]
N_CELLS = 60


@pytest.fixture(scope="module")
def pbmc():
    return ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")


def reference(folder, adata, emb_layer, special):
    """Per-cell attention and gene-pair sums from a plain eager forward, one cell at a time.

    Returns ``(per_cell, sums, counts, tokens)``: per_cell (cells × vars) dense, and the
    pair sums/counts indexed by the vocabulary-token order ``tokens``.
    """
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    layer = model.config.num_hidden_layers + emb_layer - 1
    cells = scgf.get.tokens(adata)
    token_of_var = scgf.models.get_vocabulary("V2" if special else "V1").map_genes(
        np.asarray(adata.var["ensembl_id"] if not special else adata.var_names)
    )
    column = {}
    for j, tok in enumerate(token_of_var):
        if tok >= 0:
            column.setdefault(int(tok), j)
    tokens = np.array(sorted(column))
    index = {t: i for i, t in enumerate(tokens)}
    per_cell = np.zeros(adata.shape)
    sums = np.zeros((len(tokens), len(tokens)))
    counts = np.zeros((len(tokens), len(tokens)))
    for c, ids in enumerate(cells):
        if len(ids) == 0:
            continue
        with torch.no_grad():
            out = model(input_ids=torch.as_tensor(ids)[None], output_attentions=True)
        weights = out.attentions[layer][0].double().mean(0).numpy()  # heads averaged (q, k)
        lo, hi = (1, len(ids) - 1) if special else (0, len(ids))
        genes = [index[int(t)] for t in ids[lo:hi]]
        received = weights[0] if special else weights.mean(0)
        per_cell[c, [column[int(t)] for t in ids[lo:hi]]] = received[lo:hi]
        block = weights[lo:hi, lo:hi].copy()
        np.fill_diagonal(block, 0)
        present = np.ones_like(block)
        np.fill_diagonal(present, 0)
        sums[np.ix_(genes, genes)] += block
        counts[np.ix_(genes, genes)] += present
    return per_cell, sums, counts, np.array([column[t] for t in tokens])


def expected_varp(sums, counts, columns, n_vars, top_k, min_cells):
    """Dense n_vars² expected varp: each row's top_k means over pairs in >= min_cells cells."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts >= min_cells, sums / counts, -np.inf)
    out = np.zeros((n_vars, n_vars))
    for i in range(len(columns)):
        order = np.lexsort((np.arange(len(columns)), -means[i]))[:top_k]
        order = order[np.isfinite(means[i, order])]
        out[columns[i], columns[order]] = means[i, order]
    return out


@pytest.mark.parametrize("emb_layer", [-1, 0])
def test_v2_matches_eager_attentions(tiny_v2, vocab_v2, pbmc, emb_layer):
    adata = pbmc[:N_CELLS].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    scgf.tl.attention(
        adata, model=tiny_v2, emb_layer=emb_layer, top_k=10_000, min_cells=1, batch_tokens=2000
    )
    per_cell, sums, counts, columns = reference(tiny_v2, adata, emb_layer, special=True)
    layer = adata.layers["scgf_attention"]
    assert sp.isspmatrix_csr(layer) and layer.dtype == np.float32
    assert layer.nnz == (per_cell != 0).sum() > 20 * N_CELLS  # entries at the cell's genes only
    np.testing.assert_allclose(layer.toarray(), per_cell, rtol=0, atol=1e-6)
    assert (
        np.ptp(layer.data) > layer.data.mean()
    )  # not uniform: a wrong mask, scale or layer would show
    varp = adata.varp["scgf_attention"]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, 0)
    expected = np.zeros((adata.n_vars, adata.n_vars))
    expected[np.ix_(columns, columns)] = means
    assert varp.nnz == (counts > 0).sum()
    np.testing.assert_allclose(varp.toarray(), expected, rtol=0, atol=1e-6)
    n_cells = adata.varp["scgf_attention_n_cells"].toarray()
    np.testing.assert_array_equal(n_cells[np.ix_(columns, columns)], counts)
    params = adata.uns["scgf_attention"]["params"]
    assert params["query"] == "cls" and params["emb_layer"] == emb_layer
    assert params["pair_accumulator"] == "dense"


def test_top_k_sparse_accumulator_and_heads(tiny_v2, vocab_v2, pbmc, monkeypatch):
    """Top-k per gene, min_cells, the sparse accumulator (with merges) equal to the dense one,
    and per-head layers."""
    from scgf.tl import _attention_kernels

    adata = pbmc[:N_CELLS].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    scgf.tl.attention(adata, model=tiny_v2, top_k=5, min_cells=3, heads="all")
    _, sums, counts, columns = reference(tiny_v2, adata, -1, special=True)
    want = expected_varp(sums, counts, columns, adata.n_vars, 5, 3)
    dense = adata.varp["scgf_attention"]
    np.testing.assert_allclose(dense.toarray(), want, rtol=0, atol=1e-6)
    assert np.diff(dense.indptr).max() == 5 and dense.nnz > 1000
    assert adata.varp["scgf_attention_n_cells"].data.min() >= 3
    # Per head: the mean layer is the mean of the head layers; heads=1 gives head 1 alone.
    heads = [adata.layers[f"scgf_attention_head{h}"] for h in range(2)]
    np.testing.assert_allclose(
        (heads[0] + heads[1]).toarray() / 2, adata.layers["scgf_attention"].toarray(), atol=1e-7
    )
    assert abs(heads[0] - heads[1]).max() > 1e-3

    scgf.tl.attention(adata, model=tiny_v2, heads=1, gene_pairs=False, key_added="one_head")
    np.testing.assert_allclose(
        adata.layers["one_head"].toarray(), heads[1].toarray(), rtol=0, atol=1e-7
    )

    monkeypatch.setattr(_attention_kernels, "DENSE_MAX_GENES", 0)
    monkeypatch.setattr(_attention_kernels, "MERGE_MIN", 200_000)  # merge several times
    scgf.tl.attention(adata, model=tiny_v2, top_k=5, min_cells=3, key_added="sparse_mean")
    assert adata.uns["sparse_mean"]["params"]["pair_accumulator"] == "sparse"
    diff = adata.varp["sparse_mean"] - dense
    assert abs(diff).max() < 1e-7 and adata.varp["sparse_mean"].nnz == dense.nnz


def test_v1_received_attention(tiny_v1, vocab_v1, pbmc):
    adata = pbmc[:40].copy()
    scgf.pp.tokenize(adata, model=vocab_v1, gene_key="ensembl_id")
    scgf.tl.attention(adata, model=tiny_v1, top_k=10_000, min_cells=1)
    per_cell, sums, counts, columns = reference(tiny_v1, adata, -1, special=False)
    np.testing.assert_allclose(adata.layers["scgf_attention"].toarray(), per_cell, atol=1e-6)
    want = expected_varp(sums, counts, columns, adata.n_vars, 10_000, 1)
    np.testing.assert_allclose(adata.varp["scgf_attention"].toarray(), want, rtol=0, atol=1e-6)
    assert adata.uns["scgf_attention"]["params"]["query"] == "mean"


def test_cls_only_empty_cells_copy_and_h5ad(tiny_v2, vocab_v2, pbmc, tmp_path):
    adata = pbmc[:30].copy()
    counts = adata.X.toarray()
    counts[4] = 0
    adata.X = sp.csr_matrix(counts)
    with pytest.warns(UserWarning, match="1 of 30 cells"):
        scgf.pp.tokenize(adata, model=vocab_v2)
    out = scgf.tl.attention(adata, model=tiny_v2, gene_pairs=False, copy=True)
    assert "scgf_attention" not in adata.layers and "scgf_attention" not in out.varp
    layer = out.layers["scgf_attention"]
    assert layer.indptr[5] == layer.indptr[4]  # the empty cell has no entries
    per_cell, *_ = reference(tiny_v2, adata, -1, special=True)
    np.testing.assert_allclose(layer.toarray(), per_cell, rtol=0, atol=1e-6)
    scgf.tl.attention(out, model=tiny_v2, heads=[0, 1], key_added="pairs", min_cells=1)
    out.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert (back.varp["pairs"] != out.varp["pairs"]).nnz == 0
    assert list(back.uns["pairs"]["params"]["heads"]) == [0, 1]


def test_bad_input_leaves_adata_unchanged(tiny_v2, pbmc, tmp_path):
    adata = pbmc[:10].copy()
    before = adata.copy()
    for options, message in [
        (dict(emb_layer=-2), "embedding layer's output, which has no attention"),
        (dict(emb_layer=3), r"emb_layer=3 is outside \[-2, 0\]"),
        (dict(heads=2), "has 2 attention heads per layer, numbered 0 to 1"),
        (dict(heads="max"), "use 'mean', 'all', a head number or a list"),
        (dict(top_k=0), "top_k=0 must be a whole number of at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            scgf.tl.attention(adata, model=tiny_v2, **options)
    assert list(adata.obsm) == list(before.obsm) == [] and not adata.layers
    assert set(adata.uns) == set(before.uns)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="needs an AnnData in memory"):
        scgf.tl.attention(backed, model=tiny_v2)
    backed.file.close()
