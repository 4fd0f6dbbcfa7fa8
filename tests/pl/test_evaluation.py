"""scgf.pl.evaluation: one row per embedding, a circle per metric, bars for the aggregates."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import scgf
from tests.get.test_evaluate import with_results


def test_rows_columns_and_bars():
    fig = scgf.pl.evaluation(with_results(), return_fig=True)
    ax = fig.axes[0]
    rows = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    assert rows["X_geneformer"] > rows["X_pca_hvg"]  # the best Total on top
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "KMeans\nNMI",
        "iLISI",
        "kNN\naccuracy",
        "Total",
    ]
    assert len(ax.collections) == 3  # circles for bio, batch and probe columns
    assert len(ax.patches) == 2  # one Total bar per embedding
    texts = {t.get_text() for t in ax.texts}
    assert {"0.70", "0.30", "0.90", "Bio conservation", "Aggregate score"} <= texts
    plt.close(fig)


def test_ax_show_save_and_groups(tmp_path):
    import scanpy as sc

    previous, sc.settings.figdir = sc.settings.figdir, tmp_path
    fig, ax = plt.subplots()
    returned = scgf.pl.evaluation(
        with_results(), groups=("aggregate",), ax=ax, show=False, save=".png"
    )
    sc.settings.figdir = previous
    assert returned is ax and (tmp_path / "evaluation.png").is_file()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Total"]
    plt.close(fig)
    with pytest.raises(ValueError, match="groups=\\['speed'\\] unknown"):
        scgf.pl.evaluation(with_results(), groups=("speed",), show=False)
