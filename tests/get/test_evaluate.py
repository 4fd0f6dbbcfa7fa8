"""scgf.get.evaluation_df: the long table, the wide table and the provenance table."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scgf


def with_results() -> ad.AnnData:
    adata = ad.AnnData(np.zeros((3, 2), np.float32))
    rows = [
        ("X_pca_hvg", "KMeans NMI", "bio", 0.6, np.nan),
        ("X_pca_hvg", "iLISI", "batch", 0.2, np.nan),
        ("X_pca_hvg", "kNN accuracy", "probe", 0.8, 0.01),
        ("X_pca_hvg", "Total", "aggregate", 0.5, np.nan),
        ("X_geneformer", "KMeans NMI", "bio", 0.7, np.nan),
        ("X_geneformer", "iLISI", "batch", 0.3, np.nan),
        ("X_geneformer", "kNN accuracy", "probe", 0.9, 0.02),
        ("X_geneformer", "Total", "aggregate", 0.6, np.nan),
    ]
    adata.uns["scgf_evaluate"] = {
        "results": pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"]),
        "provenance": pd.DataFrame({"embedding": ["X_geneformer"], "status": ["ok"]}),
        "params": {},
    }
    return adata


def test_long_wide_and_provenance_tables():
    adata = with_results()
    long = scgf.get.evaluation_df(adata)
    assert len(long) == 8 and list(long.columns) == ["embedding", "metric", "group", "value", "sd"]
    long.loc[0, "value"] = -1  # a copy: the stored table is not changed
    assert adata.uns["scgf_evaluate"]["results"].loc[0, "value"] == 0.6
    wide = scgf.get.evaluation_df(adata, wide=True)
    assert list(wide.index) == ["X_geneformer", "X_pca_hvg"]  # best Total first
    assert [g for g, _ in wide.columns] == ["bio", "batch", "probe", "aggregate"]
    assert wide.loc["X_pca_hvg", ("probe", "kNN accuracy")] == 0.8
    assert scgf.get.evaluation_df(adata, provenance=True)["status"].tolist() == ["ok"]


def test_missing_results_say_what_to_run():
    with pytest.raises(KeyError, match=r"run scgf.tl.evaluate\(adata, label_key=...\) first"):
        scgf.get.evaluation_df(ad.AnnData(np.zeros((2, 2))))
