"""Tidy access to attention results (:func:`scgf.tl.attention`)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._anndata import rna_modality


def attention_df(
    adata: ad.AnnData,
    gene: str | None = None,
    *,
    key: str = _keys.ATTENTION,
    n_top: int | None = None,
) -> pd.DataFrame:
    """The gene-pair attention of :func:`scgf.tl.attention` as a table.

    Parameters
    ----------
    adata
        The AnnData the attention was read on (or a MuData: its ``rna`` modality).
    gene
        One gene (a ``var_names`` entry): the genes it attends to most. ``None``: every
        stored pair.
    key
        The run's ``key_added``.
    n_top
        Keep each attending gene's ``n_top`` largest (the run kept ``top_k``).

    Returns
    -------
    One row per stored pair: ``gene`` (attending), ``attended_gene``, ``attention`` (mean
    over the cells holding both genes), ``n_cells`` and ``rank`` (1 = most attended), sorted
    by gene (in ``var`` order), then rank.
    """
    target = rna_modality(adata)
    if key not in target.varp or f"{key}_n_cells" not in target.varp:
        raise KeyError(
            f"adata.varp has no {key!r} gene-pair attention; run "
            f"scgf.tl.attention(adata, key_added={key!r}, gene_pairs=True) first."
        )
    means = target.varp[key].tocsr()
    counts = target.varp[f"{key}_n_cells"].tocsr()
    rows = None
    if gene is not None:
        rows = [_var_index(target, gene)]
        if means[rows[0]].nnz == 0:
            min_cells = target.uns.get(key, {}).get("params", {}).get("min_cells", "min_cells")
            raise ValueError(
                f"{gene!r} has no gene pairs in varp[{key!r}]: it is not in the model's "
                f"vocabulary, or no other gene occurs with it in at least {min_cells} cells "
                "(min_cells=)."
            )
    coo = means.tocoo() if rows is None else means[rows].tocoo()
    query = coo.row if rows is None else np.full(coo.nnz, rows[0])
    n_cells = np.asarray(counts[query, coo.col]).ravel()
    names = target.var_names
    table = pd.DataFrame(
        {
            "gene": names[query],
            "attended_gene": names[coo.col],
            "attention": coo.data,
            "n_cells": n_cells.astype(np.int64),
            "_query": query,
        }
    )
    table = table.sort_values(["_query", "attention"], ascending=[True, False], kind="stable")
    table["rank"] = table.groupby("_query").cumcount() + 1
    if n_top is not None:
        table = table[table["rank"] <= n_top]
    return table.drop(columns="_query").reset_index(drop=True)


def _var_index(adata: ad.AnnData, gene: str) -> int:
    """Position of ``gene`` in ``var_names``, with a hint for a near miss."""
    names = adata.var_names
    if gene in names:
        position = names.get_loc(gene)
        if not isinstance(position, int | np.integer):
            raise ValueError(f"{gene!r} occurs more than once in adata.var_names.")
        return int(position)
    close = [n for n in names if str(n).upper() == str(gene).upper()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(
        f"gene {gene!r} is not in adata.var_names ({adata.n_vars} genes, e.g. "
        f"{list(names[:3])}).{hint}"
    )
