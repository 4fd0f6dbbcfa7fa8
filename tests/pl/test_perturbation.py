"""scgf.pl.perturbation: image comparison on a fixed results table, and scanpy conventions."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from matplotlib.testing.compare import compare_images

import scgf

BASELINE = Path(__file__).parent / "_images" / "perturbation.png"


def fixed_results() -> ad.AnnData:
    genes = ["GATA4", "TBX5", "NKX2-5", "MYH6", "ACTC1", "TNNT2", "HAND2", "MEF2C"]
    shift = np.array([0.031, 0.022, 0.018, 0.009, 0.004, -0.002, 0.015, 0.001])
    fdr = np.array([1e-6, 3e-4, 0.01, 0.2, 0.6, 0.9, 0.04, 0.8])
    table = pd.DataFrame(
        {
            "perturbation": range(8),
            "gene": genes,
            "state": "goal",
            "n_cells": [40, 38, 41, 12, 40, 33, 27, 39],
            "mean_shift": shift,
            "median_shift": shift,
            "pvalue": fdr / 2,
            "fdr": fdr,
            "significant": fdr < 0.05,
        }
    )
    adata = ad.AnnData(np.zeros((2, 2)))
    adata.uns["scgf_perturb"] = {"results": table, "params": {}}
    return adata


def test_image_matches_baseline(tmp_path):
    fig = scgf.pl.perturbation(fixed_results(), n_top=6, return_fig=True)
    out = tmp_path / "perturbation.png"
    fig.savefig(out, dpi=60, bbox_inches="tight")
    plt.close(fig)
    if not BASELINE.exists():  # pragma: no cover - regenerate with the baseline removed
        out.replace(BASELINE)
        pytest.skip("baseline image written")
    assert compare_images(str(BASELINE), str(out), tol=5) is None


def test_top_genes_ax_and_save(tmp_path):
    adata = fixed_results()
    fig, ax = plt.subplots()
    assert scgf.pl.perturbation(adata, n_top=3, ax=ax, show=False) is ax
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["NKX2-5", "TBX5", "GATA4"]  # largest shift at the top
    plt.close(fig)
    sc.settings.figdir = tmp_path
    scgf.pl.perturbation(adata, save=".png", show=False)
    assert (tmp_path / "perturbation.png").exists()
    plt.close("all")
    with pytest.raises(ValueError, match="No results for state"):
        scgf.pl.perturbation(adata, state="nope", show=False)
