"""``scgf.pl.embedding``: a UMAP of Geneformer embeddings, drawn by scanpy."""

from __future__ import annotations

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
        An AnnData with embeddings from :func:`scgf.tl.embed` (or a MuData: its ``rna``
        modality).
    basis
        The ``obsm`` key of the embedding.
    color
        ``obs`` columns or genes to colour by, as in :func:`scanpy.pl.embedding`.
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
    if basis not in target.obsm:
        raise KeyError(
            f"adata.obsm has no {basis!r}; run scgf.tl.embed(adata, key_added={basis!r}) first."
        )
    if umap_key(basis) not in target.obsm:
        _compute_umap(target, basis, random_state)
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
