"""Tidy access to embedding evaluation results."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from .. import _keys
from .._anndata import rna_modality

GROUPS = ("bio", "batch", "probe", "aggregate")


def evaluation_df(
    adata: ad.AnnData,
    *,
    key: str = _keys.EVALUATE,
    wide: bool = False,
    provenance: bool = False,
) -> pd.DataFrame:
    """The results table of :func:`scgf.tl.evaluate`.

    Parameters
    ----------
    adata
        The AnnData the evaluation ran on (or a MuData: its ``rna`` modality).
    key
        The ``key_added`` of the run.
    wide
        One row per embedding and one column per metric (a ``(group, metric)`` column
        index, groups in the order bio, batch, probe, aggregate), sorted by the best
        aggregate score, instead of the long table.
    provenance
        Return the provenance check's table instead (one row per embedding: ``source``,
        ``recorded`` parameters, ``signature``, neighbour ``agreement`` with the expression,
        its ``chance`` level and ``z``, ``status`` ``"ok"``/``"mismatch"``, ``detail``).

    Returns
    -------
    Long form: columns ``embedding``, ``metric``, ``group``, ``value``, ``sd`` (the spread
    over the probe's splits; NaN for the single-run scib-metrics scores).
    """
    target = rna_modality(adata)
    if key not in target.uns or "results" not in target.uns[key]:
        raise KeyError(
            f"adata.uns has no {key!r} results; run scgf.tl.evaluate(adata, label_key=...) first."
        )
    if provenance:
        return target.uns[key]["provenance"].copy()
    table = target.uns[key]["results"].copy()
    if not wide:
        return table
    order = {g: i for i, g in enumerate(GROUPS)}
    columns = (
        table[["group", "metric"]]
        .drop_duplicates()
        .sort_values("group", key=lambda c: c.map(order), kind="stable")
    )
    values = table.pivot(index="embedding", columns=["group", "metric"], values="value")
    values = values[pd.MultiIndex.from_frame(columns)]
    for best in (("aggregate", "Total"), ("aggregate", "Bio conservation")):
        if best in values.columns:
            values = values.sort_values(best, ascending=False)
            break
    values.columns.names = ["group", "metric"]
    return values
