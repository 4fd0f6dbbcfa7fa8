"""The bundled dataset rebuilds scanpy's pbmc68k_reduced counts exactly."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import scgf
from tests.conftest import DATA


def test_counts_are_integers_and_totals_match():
    adata = scgf.datasets.pbmc68k_reduced()
    assert adata.shape == (700, 765)
    assert np.array_equal(adata.X.data, np.rint(adata.X.data)) and adata.X.data.min() > 0
    np.testing.assert_allclose(np.asarray(adata.X.sum(1)).ravel(), adata.obs["n_counts"])
    assert adata.obs["cell_type"].nunique() == 10


@pytest.mark.skipif(not (DATA / "pbmc68k_reduced_counts.h5ad").exists(), reason="no shared data")
def test_equals_the_shared_copy():
    ours = scgf.datasets.pbmc68k_reduced()
    shared = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    assert (ours.X != shared.X).nnz == 0
    assert list(ours.var_names) == list(shared.var_names)
    assert list(ours.obs["cell_type"]) == list(shared.obs["cell_type"])
