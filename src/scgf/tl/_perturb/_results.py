"""In silico perturbation results into AnnData: the summary table, gene shifts and per-cell
scores."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._common import var_tokens
from ._plan import ALL
from ._stats import summarize


def _gene_names(adata: ad.AnnData, vocab, tokens_key: str) -> dict[int, str]:
    """Display name of each token: the first variable mapping to it, else its Ensembl ID."""
    names = {}
    for name, tok in zip(adata.var_names, var_tokens(adata, vocab, tokens_key), strict=True):
        if tok != vocab.pad_id:
            names.setdefault(int(tok), str(name))
    return names


def store_results(
    adata, key, records, plan, vocab, states, params, tokens_key, *, test, random_state
):
    state_names = [str(s) for s in states] or ["original"]
    if not records or len(records["cell"]) == 0:
        raise ValueError(
            "No cell could be perturbed: no selected cell expresses the requested gene(s) "
            "(or the anchor gene), or no cell is in the start state."
        )
    names = _gene_names(adata, vocab, tokens_key)

    def label(pid: int) -> str:
        return plan.names.get(pid) if plan.mode != ALL else names.get(pid, vocab.id_of_token[pid])

    results = summarize(
        records["perturbation"],
        records["scores"],
        state_names,
        test=test,
        random_state=random_state,
    )
    results.insert(1, "gene", [label(int(p)) for p in results["perturbation"]])
    if plan.mode == ALL:
        results.insert(
            2, "ensembl_id", [vocab.id_of_token[int(p)] for p in results["perturbation"]]
        )
    results["significant"] = results["fdr"] < 0.05
    results = results.sort_values(
        ["state", "fdr", "mean_shift"],
        ascending=[True, True, False],
        key=lambda c: c.map({s: i for i, s in enumerate(state_names)}) if c.name == "state" else c,
        na_position="last",
        ignore_index=True,
    )
    uns = {"params": _h5_safe(params), "results": results, "states": state_names}
    if len(records.get("gene_token", [])):
        frame = pd.DataFrame(
            {
                "perturbation": records["gene_pert"].astype(np.int64),
                "affected": records["gene_token"].astype(np.int64),
                "cosine": records["gene_cosine"],
            }
        )
        shifts = (
            frame.groupby(["perturbation", "affected"], sort=False)["cosine"]
            .agg(["mean", "count"])
            .reset_index()
        )
        shifts.columns = ["perturbation", "affected", "mean_cosine", "n_cells"]
        shifts.insert(1, "gene", [label(int(p)) for p in shifts["perturbation"]])
        shifts.insert(
            3,
            "affected_gene",
            [names.get(int(t), vocab.id_of_token[int(t)]) for t in shifts["affected"]],
        )
        uns["gene_shifts"] = shifts.sort_values("mean_cosine", ignore_index=True)
    adata.uns[key] = uns
    _per_cell(adata, key, records, plan, vocab, tokens_key, label)


def _per_cell(adata, key, records, plan, vocab, tokens_key, label) -> None:
    first = records["scores"][:, 0]
    if plan.mode == ALL:
        var_of_token = {}
        for j, tok in enumerate(var_tokens(adata, vocab, tokens_key)):
            var_of_token.setdefault(int(tok), j)
        cols = np.array([var_of_token.get(int(p), -1) for p in records["perturbation"]])
        keep = cols >= 0
        adata.layers[key] = sp.csr_matrix(
            (first[keep], (records["cell"][keep], cols[keep])), shape=adata.shape, dtype=np.float32
        )
        return
    table = pd.DataFrame(
        np.nan,
        index=adata.obs_names,
        columns=[label(int(p)) for p in plan.groups],
        dtype=np.float32,
    )
    for pid in plan.groups:
        hit = records["perturbation"] == pid
        table.iloc[records["cell"][hit], list(plan.groups).index(pid)] = first[hit]
    adata.obsm[key] = table


def _h5_safe(params: dict) -> dict:
    """Parameters in a form ``.h5ad`` can store (no ``None``; nested values as strings)."""
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, str | int | float | bool) else str(v)
    return out
