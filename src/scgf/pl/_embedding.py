"""``scgf.pl.embedding``: a UMAP of Geneformer embeddings, drawn by scanpy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import anndata as ad
import numpy as np

from .. import _keys
from .._anndata import rna_modality


def umap_key(basis: str) -> str:
    """Where the UMAP of ``basis`` is kept: ``X_geneformer`` → ``X_umap_geneformer``."""
    return f"X_umap_{basis.removeprefix('X_')}"


def _compute_umap(adata: ad.AnnData, basis: str, random_state: int) -> None:
    import scanpy as sc

    values = np.asarray(adata.obsm[basis])
    usable = ~np.isnan(values).any(axis=1)
    work = (
        adata
        if usable.all()
        else ad.AnnData(obs=adata.obs[usable][[]], obsm={basis: values[usable]})
    )
    neighbors = f"{basis}_neighbors"
    sc.pp.neighbors(work, use_rep=basis, key_added=neighbors, random_state=random_state)
    sc.tl.umap(work, neighbors_key=neighbors, random_state=random_state, key_added=umap_key(basis))
    if work is not adata:
        coords = np.full((adata.n_obs, 2), np.nan, dtype=np.float32)
        coords[usable] = work.obsm[umap_key(basis)]
        adata.obsm[umap_key(basis)] = coords


def embedding(
    adata: ad.AnnData,
    *,
    basis: str = _keys.EMBEDDING,
    color: str | list[str] | None = None,
    random_state: int = 0,
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
    **kwargs,
):
    """Plot cells on a UMAP of their Geneformer embedding.

    When ``adata.obsm`` has no UMAP of ``basis`` yet, neighbours
    (``adata.uns[f"{basis}_neighbors"]``) and a UMAP (``adata.obsm["X_umap_…"]``, e.g.
    ``X_umap_geneformer``) are computed first. Cells without an embedding (NaN rows) get NaN
    coordinates and are not drawn; the neighbour graph is then computed on the other cells and
    not kept.

    Parameters
    ----------
    adata
        An AnnData with embeddings from :func:`scgf.tl.embed`, or a MuData: its ``rna``
        modality is drawn.
    basis
        The ``obsm`` key of the embedding (for a MuData, with or without the ``rna:`` prefix).
    color
        ``obs`` columns or genes to colour by, as in :func:`scanpy.pl.embedding`. For a MuData,
        as in muon: the ``rna`` modality's columns and genes with or without the ``rna:``
        prefix, ``mdata.obs`` columns, and other modalities' columns as ``"atac:cluster"``.
    random_state
        Seed of the neighbour search and UMAP when they are computed here.
    show, save, ax, return_fig
        As in scanpy's plotting functions.
    **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    Returns
    -------
    What :func:`scanpy.pl.embedding` returns: the figure with ``return_fig=True``, the axes
    with ``show=False``, else ``None``.
    """
    import scanpy as sc

    target = rna_modality(adata)
    keys = _MuDataKeys(adata, target) if target is not adata else None
    if keys is not None:
        basis = keys.own(basis)
    if basis not in target.obsm:
        raise KeyError(
            f"adata.obsm has no {basis!r}; run scgf.tl.embed(adata, key_added={basis!r}) first."
        )
    if umap_key(basis) not in target.obsm:
        _compute_umap(target, basis, random_state)
    lent = nullcontext()
    if keys is not None and color is not None:
        single = isinstance(color, str)
        colors = [color] if single else list(color)
        plotted = [keys.plotted(c) for c in colors]
        if "title" not in kwargs and plotted != colors:
            # Titles as the user wrote the keys ("rna:cell_type"), as muon's plots have them.
            kwargs["title"] = color if single else colors
        color = plotted[0] if single else plotted
        lent = keys.borrowed_columns(colors)
    with lent:
        return sc.pl.embedding(
            target,
            basis=umap_key(basis),
            color=color,
            show=show,
            save=save,
            ax=ax,
            return_fig=return_fig,
            **kwargs,
        )


class _MuDataKeys:
    """``color`` keys of a MuData, read as muon users write them, for a plot of its RNA
    modality: ``"rna:cell_type"`` or ``"cell_type"`` (the modality's own column or gene), a
    global ``mdata.obs`` column, or another modality's column (``"atac:cluster"``)."""

    def __init__(self, mdata, target: ad.AnnData) -> None:
        self.mdata = mdata
        self.target = target
        self.prefix = next(f"{name}:" for name, mod in mdata.mod.items() if mod is target)

    def own(self, key: str) -> str:
        """``key`` without the RNA modality's prefix (for ``obsm`` keys)."""
        return key.removeprefix(self.prefix)

    def _in_target(self, key: str) -> bool:
        raw = self.target.raw
        return (
            key in self.target.obs.columns
            or key in self.target.var_names
            or (raw is not None and key in raw.var_names)
        )

    def plotted(self, key: str) -> str:
        """The key scanpy is given: the modality's own column or gene when there is one."""
        if self._in_target(key):
            return key
        if key.startswith(self.prefix) and self._in_target(self.own(key)):
            return self.own(key)
        return key

    def borrowed(self, key: str):
        """Values of a column from outside the modality, aligned to its cells, or ``None``."""
        if self._in_target(self.plotted(key)):
            return None
        if key in self.mdata.obs.columns:
            values = self.mdata.obs[key]
        else:
            name, sep, column = key.partition(":")
            if not (sep and name in self.mdata.mod and column in self.mdata.mod[name].obs):
                return None  # scanpy says the key is missing
            values = self.mdata.mod[name].obs[column]
        return values.reindex(self.target.obs_names)

    @contextmanager
    def borrowed_columns(self, keys: list[str]) -> Iterator[None]:
        """Lend columns from outside the modality to its ``obs`` while scanpy draws; they
        (and the colours scanpy stores for them) are removed afterwards."""
        obs, uns = self.target.obs, self.target.uns
        lent = {}
        for key in keys:
            values = self.borrowed(key)
            if values is not None:
                lent[key] = values
        had_colors = {key for key in lent if f"{key}_colors" in uns}
        for key, values in lent.items():
            obs[key] = values
        try:
            yield
        finally:
            for key in lent:
                obs.drop(columns=key, inplace=True, errors="ignore")
                if key not in had_colors:
                    uns.pop(f"{key}_colors", None)
