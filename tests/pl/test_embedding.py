"""scgf.pl.embedding: UMAP computed when absent, scanpy's plot conventions, image comparison."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.testing.compare import compare_images

import scgf

BASELINE = Path(__file__).parent / "_images" / "embedding.png"


def fixed_layout() -> ad.AnnData:
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [6, 1], [2, 7]])
    labels = np.repeat(["B cell", "T cell", "monocyte"], 40)
    coords = np.vstack([c + rng.normal(size=(40, 2)) for c in centers]).astype(np.float32)
    adata = ad.AnnData(
        obs=pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(120)])
    )
    adata.obsm["X_geneformer"] = rng.normal(size=(120, 8)).astype(np.float32)
    adata.obsm["X_umap_geneformer"] = coords
    return adata


def test_image_matches_baseline(tmp_path):
    adata = fixed_layout()
    fig = scgf.pl.embedding(
        adata,
        color="cell_type",
        return_fig=True,
        show=False,
        size=60,
        frameon=False,
        title="Geneformer",
    )
    out = tmp_path / "embedding.png"
    fig.savefig(out, dpi=60, bbox_inches="tight")
    plt.close(fig)
    if not BASELINE.exists():  # pragma: no cover - regenerate with the baseline removed
        BASELINE.parent.mkdir(exist_ok=True)
        out.replace(BASELINE)
        pytest.skip("baseline image written")
    assert compare_images(str(BASELINE), str(out), tol=5) is None


def test_computes_umap_when_absent_and_honours_ax():
    adata = fixed_layout()
    del adata.obsm["X_umap_geneformer"]
    adata.obsm["X_geneformer"][3] = np.nan  # a cell without tokens
    fig, ax = plt.subplots()
    returned = scgf.pl.embedding(adata, color="cell_type", ax=ax, show=False)
    assert returned is ax
    coords = adata.obsm["X_umap_geneformer"]
    assert coords.shape == (120, 2) and np.isnan(coords[3]).all()
    assert not np.isnan(np.delete(coords, 3, 0)).any()
    plt.close(fig)


def test_keeps_the_neighbour_graph():
    adata = fixed_layout()
    del adata.obsm["X_umap_geneformer"]
    scgf.pl.embedding(adata, color="cell_type", show=False)
    assert "X_geneformer_neighbors" in adata.uns
    assert adata.obsm["X_umap_geneformer"].shape == (120, 2)
    plt.close("all")


def test_missing_embedding_is_a_clear_error():
    with pytest.raises(KeyError, match="run scgf.tl.embed"):
        scgf.pl.embedding(ad.AnnData(np.zeros((3, 2))), show=False)
