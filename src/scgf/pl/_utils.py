"""Plumbing shared by the ``scgf.pl`` plots that draw with matplotlib themselves."""

from __future__ import annotations

from pathlib import Path


def axes(ax, figsize):
    """``(figure, axes)``: a new figure of ``figsize`` when ``ax`` is ``None``, else ``ax``'s."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def finish(fig, ax, name: str, show, save, return_fig, *, default_name: str | None = None):
    """scanpy's plot contract: save into ``sc.settings.figdir``, return fig/axes, or show.

    ``save=True`` writes ``{default_name or name}.pdf``; a string ``save`` is a suffix of
    ``name`` (``save="_b.png"`` → ``{name}_b.png``), as in scanpy.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if save:
        file_name = f"{default_name or name}.pdf" if save is True else f"{name}{save}"
        Path(sc.settings.figdir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(sc.settings.figdir) / file_name, bbox_inches="tight")
    if return_fig:
        return fig
    show = sc.settings.autoshow if show is None else show
    if show:
        plt.show()
        return None
    return ax
