"""scgf.get.attention_df: a tidy table of the gene-pair attention in varp."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scgf


def fixed_attention() -> ad.AnnData:
    """Four genes; row = attending gene, as scgf.tl.attention stores it."""
    genes = ["CD3E", "CD8A", "LYZ", "MS4A1"]
    means = np.array(
        [
            [0.0, 0.30, 0.10, 0.20],
            [0.05, 0.0, 0.0, 0.40],
            [0.0, 0.0, 0.0, 0.0],  # LYZ: no pairs kept
            [0.25, 0.0, 0.15, 0.0],
        ],
        dtype=np.float32,
    )
    counts = np.where(means > 0, np.arange(16).reshape(4, 4) + 3, 0).astype(np.int32)
    adata = ad.AnnData(np.zeros((2, 4), dtype=np.float32))
    adata.var_names = genes
    adata.varp["scgf_attention"] = sp.csr_matrix(means)
    adata.varp["scgf_attention_n_cells"] = sp.csr_matrix(counts)
    adata.uns["scgf_attention"] = {"params": {"min_cells": 3}}
    return adata


def test_one_gene_ranked():
    table = scgf.get.attention_df(fixed_attention(), "CD3E")
    assert list(table.columns) == ["gene", "attended_gene", "attention", "n_cells", "rank"]
    assert list(table["attended_gene"]) == ["CD8A", "MS4A1", "LYZ"]
    np.testing.assert_allclose(table["attention"], [0.30, 0.20, 0.10])
    assert list(table["n_cells"]) == [4, 6, 5] and list(table["rank"]) == [1, 2, 3]
    assert (table["gene"] == "CD3E").all()


def test_all_pairs_and_n_top():
    table = scgf.get.attention_df(fixed_attention(), n_top=1)
    assert list(zip(table["gene"], table["attended_gene"], strict=True)) == [
        ("CD3E", "CD8A"),
        ("CD8A", "MS4A1"),
        ("MS4A1", "CD3E"),
    ]
    assert len(scgf.get.attention_df(fixed_attention())) == 7


def test_bad_input():
    adata = fixed_attention()
    with pytest.raises(KeyError, match="gene 'CD3' is not in adata.var_names"):
        scgf.get.attention_df(adata, "CD3")
    with pytest.raises(KeyError, match="Did you mean 'CD3E'"):
        scgf.get.attention_df(adata, "cd3e")
    with pytest.raises(ValueError, match="'LYZ' has no gene pairs in varp"):
        scgf.get.attention_df(adata, "LYZ")
    with pytest.raises(KeyError, match="run scgf.tl.attention"):
        scgf.get.attention_df(adata, "CD3E", key="other")
