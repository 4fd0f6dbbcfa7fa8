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


# --- MuData: the rna modality, keys as muon users write them ---------------------------------


def as_mudata():
    import mudata as md

    rna = fixed_layout()
    rna.X = np.zeros((rna.n_obs, 0), np.float32)
    atac = ad.AnnData(
        np.zeros((rna.n_obs, 3), np.float32),
        obs=pd.DataFrame(
            {"peak_cluster": pd.Categorical(np.tile(["p1", "p2", "p3"], 40))},
            index=rna.obs_names,
        ),
    )
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["sample"] = pd.Categorical(np.repeat(["s1", "s2"], 60), categories=["s1", "s2"])
    return mdata


def legend_labels(ax) -> list[str]:
    return list(ax.get_legend_handles_labels()[1])


@pytest.mark.parametrize("color", ["rna:cell_type", "cell_type"])
def test_mudata_colours_by_the_rna_obs_column(color):
    mdata = as_mudata()
    ax = scgf.pl.embedding(mdata, color=color, show=False)
    assert legend_labels(ax) == ["B cell", "T cell", "monocyte"]
    assert ax.get_title() == color  # the key as the user wrote it
    plt.close("all")


@pytest.mark.parametrize(
    ("color", "labels"), [("sample", ["s1", "s2"]), ("atac:peak_cluster", ["p1", "p2", "p3"])]
)
def test_mudata_colours_by_global_and_other_modality_columns(color, labels):
    mdata = as_mudata()
    rna = mdata.mod["rna"]
    obs_before, uns_before = list(rna.obs.columns), set(rna.uns)
    axes = scgf.pl.embedding(
        mdata, color=["rna:cell_type", color], basis="rna:X_geneformer", show=False
    )
    assert legend_labels(axes[1]) == labels and axes[1].get_title() == color
    # The modality is left as it was, apart from the colours scanpy keeps for its own columns.
    assert list(rna.obs.columns) == obs_before
    assert set(rna.uns) - uns_before <= {"cell_type_colors", "X_geneformer_neighbors"}
    plt.close("all")
