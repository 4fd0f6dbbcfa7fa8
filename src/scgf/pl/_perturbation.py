"""``scgf.pl.perturbation``: the genes whose perturbation moves cells most."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .. import _keys
from ..get import perturb_df
from ._utils import axes, finish


def perturbation(
    adata: ad.AnnData,
    *,
    key: str = _keys.PERTURB,
    state: str | None = None,
    n_top: int = 20,
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """Bar chart of the perturbations with the largest effect, annotated with their FDR.

    With cell states, bars are the mean shift toward ``state`` (default: the goal state),
    largest first; without states, the mean change ``1 - cosine`` between perturbed and
    original embeddings. Each bar carries its cell count and, where tested, the
    Benjamini–Hochberg FDR (bold when below 0.05).

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.perturb` ran on.
    key
        The run's ``key_added``.
    state
        Which state's shifts to show (default the first: goal state, or the original).
    n_top
        How many perturbations to show.
    show, save, ax, return_fig
        As in scanpy: ``save=True`` writes ``perturbation.pdf`` into ``scanpy.settings.figdir``,
        a string ``s`` writes ``perturbation{s}``.

    Returns
    -------
    The figure with ``return_fig=True``, the axes with ``show=False``, else ``None``.
    """
    table = perturb_df(adata, key=key)
    state = table["state"].iloc[0] if state is None else str(state)
    rows = table[table["state"] == state]
    if rows.empty:
        states = list(table["state"].unique())
        raise ValueError(f"No results for state {state!r}; states are {states}.")
    with_states = state != "original"
    values = rows["mean_shift"] if with_states else 1 - rows["mean_shift"]
    top = rows.assign(value=values.to_numpy()).nlargest(n_top, "value").iloc[::-1]
    fig, ax = axes(ax, (5, 0.3 * len(top) + 1.2))
    positions = np.arange(len(top))
    colors = np.where(top["fdr"].fillna(1) < 0.05, "#c0392b", "#7f8c8d")
    ax.barh(positions, top["value"], color=colors)
    ax.set_yticks(positions, top["gene"])
    ax.set_xlabel(f"mean shift toward {state}" if with_states else "mean 1 − cosine to original")
    for y, (_, row) in zip(positions, top.iterrows(), strict=True):
        text = f" n={row['n_cells']}"
        if not np.isnan(row["fdr"]):
            text += f", FDR={row['fdr']:.2g}"
        ax.text(
            row["value"],
            y,
            text,
            va="center",
            fontsize=7,
            fontweight="bold" if row["fdr"] < 0.05 else "normal",
        )
    ax.margins(x=0.35)
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, "perturbation", show, save, return_fig)
