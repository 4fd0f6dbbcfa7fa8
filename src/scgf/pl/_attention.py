"""``scgf.pl.attention``: the genes a gene attends to most."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .. import _keys
from ..get import attention_df
from ._utils import axes, finish


def attention(
    adata: ad.AnnData,
    gene: str,
    *,
    key: str = _keys.ATTENTION,
    n_top: int = 20,
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """Bar chart of the genes ``gene`` attends to most (:func:`scgf.tl.attention`).

    Bars are the mean attention from ``gene`` to each other gene over the cells that hold
    both, largest on top, each annotated with that number of cells.

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.attention` ran on.
    gene
        A ``var_names`` entry.
    key
        The run's ``key_added``.
    n_top
        How many attended genes to show (at most the run's ``top_k``).
    show, save, ax, return_fig
        As in scanpy: ``save=True`` writes ``attention_{gene}.pdf`` into
        ``scanpy.settings.figdir``, a string ``s`` writes ``attention{s}``.

    Returns
    -------
    The figure with ``return_fig=True``, the axes with ``show=False``, else ``None``.
    """
    table = attention_df(adata, gene, key=key, n_top=n_top).iloc[::-1]
    fig, ax = axes(ax, (4.5, 0.28 * len(table) + 1.2))
    positions = np.arange(len(table))
    ax.barh(positions, table["attention"], color="#2c7fb8")
    ax.set_yticks(positions, table["attended_gene"])
    ax.set_xlabel(f"mean attention from {gene}")
    ax.set_title(f"{gene}: most attended genes", fontsize=10)
    for y, (value, n) in enumerate(zip(table["attention"], table["n_cells"], strict=True)):
        ax.text(value, y, f" n={n}", va="center", fontsize=7)
    ax.margins(x=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, "attention", show, save, return_fig, default_name=f"attention_{gene}")
