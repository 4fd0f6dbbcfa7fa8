"""Tidy access to the gene classes that ``scgf.tl.predict_genes`` stored."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from .. import _keys
from .._anndata import rna_modality


def gene_predictions_df(
    adata: ad.AnnData, *, key: str = _keys.GENE_PRED, all_genes: bool = False
) -> pd.DataFrame:
    """The predicted class of every gene the cells express, as a table.

    Parameters
    ----------
    adata
        An AnnData (or MuData: its ``rna`` modality) that :func:`scgf.tl.predict_genes` wrote.
    key
        The ``key_added`` it used.
    all_genes
        Also list the genes without a prediction (no cell expresses them, or they are not
        in the vocabulary), with NaN.

    Returns
    -------
    One row per gene (index: ``var_names``) with ``prediction`` (the most probable class),
    ``n_cells`` (cells that express the gene, over which its probabilities are averaged)
    and one probability column per class, in the model's class order.
    """
    target = rna_modality(adata)
    proba_key, n_key = f"{key}_proba", f"{key}_n_cells"
    if key not in target.var or proba_key not in target.varm or key not in target.uns:
        raise KeyError(
            f"adata has no gene predictions under {key!r} (var[{key!r}], "
            f"varm[{proba_key!r}]); run scgf.tl.predict_genes(adata, model=...) first (or pass "
            "the key_added you used)."
        )
    classes = [str(c) for c in target.uns[key]["classes"]]
    table = pd.DataFrame(
        {"prediction": target.var[key], "n_cells": target.var[n_key]}, index=target.var_names
    )
    proba = pd.DataFrame(target.varm[proba_key], index=target.var_names, columns=classes)
    table = pd.concat([table, proba], axis=1)
    table.index.name = "gene"
    return table if all_genes else table[table["n_cells"] > 0]
