"""scgf.pl.attention: a gene's most attended genes, with scanpy's plot conventions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import scanpy as sc

import scgf
from tests.get.test_attention import fixed_attention


def test_bars_ax_save_and_return_fig(tmp_path):
    adata = fixed_attention()
    fig, ax = plt.subplots()
    assert scgf.pl.attention(adata, "CD3E", n_top=2, ax=ax, show=False) is ax
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["MS4A1", "CD8A"]  # most attended at the top
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == pytest.approx([0.20, 0.30])
    plt.close(fig)
    sc.settings.figdir = tmp_path
    scgf.pl.attention(adata, "CD8A", save=True, show=False)
    assert (tmp_path / "attention_CD8A.pdf").exists()
    fig = scgf.pl.attention(adata, "MS4A1", return_fig=True)
    assert isinstance(fig, plt.Figure)
    plt.close("all")


def test_unknown_gene():
    with pytest.raises(KeyError, match="gene 'GATA4' is not in adata.var_names"):
        scgf.pl.attention(fixed_attention(), "GATA4", show=False)
