"""Tidy access to in silico perturbation results."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from .. import _keys
from .._anndata import rna_modality


def perturb_df(
    adata: ad.AnnData,
    *,
    key: str = _keys.PERTURB,
    state: str | None = None,
    gene_shifts: bool = False,
) -> pd.DataFrame:
    """The results table of :func:`scgf.tl.perturb`.

    Parameters
    ----------
    adata
        The AnnData the perturbation ran on (or a MuData: its ``rna`` modality).
    key
        The ``key_added`` of the run.
    state
        Keep the rows of one state only (e.g. the goal state's value).
    gene_shifts
        Return the per-affected-gene table (runs with ``gene_shifts=True``) instead.

    Returns
    -------
    One row per perturbation and state: ``perturbation`` (token or group id), ``gene``,
    ``state``, ``n_cells``, ``mean_shift``, ``median_shift``, ``pvalue``, ``fdr``,
    ``significant``; sorted by state, then FDR, then shift.
    """
    target = rna_modality(adata)
    if key not in target.uns or "results" not in target.uns[key]:
        raise KeyError(f"adata.uns has no {key!r} results; run scgf.tl.perturb(adata, ...) first.")
    if gene_shifts:
        if "gene_shifts" not in target.uns[key]:
            raise KeyError(
                "This run has no gene shifts; run scgf.tl.perturb(..., gene_shifts=True)."
            )
        return target.uns[key]["gene_shifts"].copy()
    table = target.uns[key]["results"].copy()
    if state is not None:
        table = table[table["state"] == str(state)].reset_index(drop=True)
    return table
