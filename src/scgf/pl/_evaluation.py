"""``scgf.pl.evaluation``: the results table of :func:`scgf.tl.evaluate`, as scib-metrics
draws it: one row per embedding, a coloured circle per metric, bars for the aggregates."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .. import _keys
from ..get import evaluation_df
from ._utils import axes, finish

_TITLES = {
    "bio": "Bio conservation",
    "batch": "Batch correction",
    "probe": "Label transfer",
    "aggregate": "Aggregate score",
}


def evaluation(
    adata: ad.AnnData,
    *,
    key: str = _keys.EVALUATE,
    groups: tuple[str, ...] = ("bio", "batch", "probe", "aggregate"),
    cmap: str = "PRGn",
    bar_cmap: str = "YlGnBu",
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """Table of every embedding's scores, best aggregate first.

    Rows are embeddings; columns are metrics grouped under bio conservation, batch
    correction, label transfer (the probes, mean over splits) and the aggregate scores. Each
    metric is a circle coloured on its own column's range (``cmap``) with its value; the
    aggregates are bars (``bar_cmap``), as in scib-metrics' ``plot_results_table``.

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.evaluate` ran on.
    key
        The run's ``key_added``.
    groups
        Which groups of metrics to show, in this order.
    cmap, bar_cmap
        Matplotlib colour maps of the circles and of the bars.
    show, save, ax, return_fig
        As in scanpy: ``save=True`` writes ``evaluation.pdf`` into ``scanpy.settings.figdir``,
        a string ``s`` writes ``evaluation{s}``.

    Returns
    -------
    The figure with ``return_fig=True``, the axes with ``show=False``, else ``None``.
    """
    from matplotlib import colormaps

    table = evaluation_df(adata, key=key, wide=True)
    unknown = set(groups) - set(_TITLES)
    if unknown:
        raise ValueError(f"groups={sorted(unknown)} unknown; choose from {list(_TITLES)}.")
    columns = [c for g in groups for c in table.columns if c[0] == g]
    if not columns:
        raise ValueError(f"No metrics of groups {list(groups)} in this run.")
    table = table[columns]
    n_rows, n_cols = table.shape
    fig, ax = axes(ax, (1.8 + 0.9 * n_cols, 1.3 + 0.45 * n_rows))
    circles, bars = colormaps[cmap], colormaps[bar_cmap]
    y = np.arange(n_rows)[::-1]  # best first, at the top
    for x, column in enumerate(columns):
        values = table[column].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        scaled = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
        if column[0] == "aggregate":
            ax.barh(
                y,
                0.85 * np.nan_to_num(values),
                left=x - 0.42,
                height=0.6,
                color=bars(0.25 + 0.6 * np.nan_to_num(scaled)),
            )
            for yi, v in zip(y, values, strict=True):  # the value just past the bar's end
                end = x - 0.42 + 0.85 * (0 if np.isnan(v) else max(v, 0))
                text = "" if np.isnan(v) else f"{v:.2f}"
                ax.text(end + 0.03, yi, text, va="center", fontsize=7)
            continue
        ax.scatter(
            np.full(n_rows, x),
            y,
            s=520,
            c=circles(0.15 + 0.7 * np.nan_to_num(scaled)),
            edgecolors="none",
        )
        for yi, v, s in zip(y, values, scaled, strict=True):
            text = "–" if np.isnan(v) else f"{v:.2f}"
            color = "white" if not np.isnan(s) and (s < 0.2 or s > 0.8) else "black"
            ax.text(x, yi, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(-0.7, n_rows - 0.3)
    ax.set_yticks(y, table.index, fontweight="bold")
    ax.set_xticks(np.arange(n_cols), [m.replace(" ", "\n", 1) for _, m in columns], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    # Group titles above their columns, with a rule under each.
    start = 0
    for group in groups:
        width = sum(c[0] == group for c in columns)
        if width:
            middle = start + (width - 1) / 2
            ax.annotate(
                _TITLES[group],
                (middle, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 34),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                fontweight="bold",
            )
            ax.annotate(
                "",
                (start - 0.4, 1.0),
                (start + width - 0.6, 1.0),
                xycoords=("data", "axes fraction"),
                textcoords=("data", "axes fraction"),
                arrowprops={"arrowstyle": "-", "lw": 1},
                annotation_clip=False,
            )
            if start:
                ax.axvline(start - 0.5, color="black", lw=0.6, ls=":")
            start += width
    for yi in y[:-1]:
        ax.axhline(yi - 0.5, color="grey", lw=0.5, ls=(0, (1, 5)))
    return finish(fig, ax, "evaluation", show, save, return_fig)
