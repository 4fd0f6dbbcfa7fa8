"""Checks that tokenization input is what Geneformer expects, with messages that say what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..vocab import Vocabulary
from ..vocab._gene_ids import describe_identifiers, normalize_gene_ids


class InputDataError(ValueError):
    """The data given to a scgf function cannot be used as it is."""


def check_raw_counts(chunk: sp.csr_matrix, start: int, obs_names: pd.Index, source: str) -> None:
    """Raise if a chunk holds negative, non-finite or non-integer values."""
    data = chunk.data
    if data.size == 0:
        return

    def where(mask: np.ndarray) -> str:
        pos = int(np.flatnonzero(mask)[0])
        row = int(np.searchsorted(chunk.indptr, pos, side="right") - 1)
        return f"{float(data[pos])} in cell {obs_names[start + row]!r}"

    bad = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    if bad.any():
        raise InputDataError(
            f"{source} holds non-finite values ({where(bad)}). Geneformer needs raw counts: "
            "remove or fix those entries first."
        )
    negative = data < 0
    if negative.any():
        raise InputDataError(
            f"{source} holds negative values ({where(negative)}), so it is not raw counts "
            "(scaled or batch-corrected data?). Pass layer= naming the raw-count layer."
        )
    if data.dtype.kind == "f":
        fractional = data != np.floor(data)
        if fractional.any():
            hint = (
                "log-transformed (sc.pp.log1p)"
                if data.max() < 20
                else "normalised (sc.pp.normalize_total)"
            )
            raise InputDataError(
                f"{source} holds non-integer values ({where(fractional)}); it looks "
                f"{hint}. Geneformer ranks raw counts: pass layer= naming a layer of raw "
                "counts (e.g. layer='counts'), or rebuild an AnnData from adata.raw."
            )


def check_n_counts(n_counts: np.ndarray, chunk: sp.csr_matrix, start: int, obs_names, key: str):
    """Raise if a cell with counts has a missing, zero or negative total."""
    has_counts = np.diff(chunk.indptr) > 0
    bad = has_counts & ~(np.asarray(n_counts, dtype=np.float64) > 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"obs[{key!r}] is {float(n_counts[row])} for cell {obs_names[start + row]!r}, which "
            f"has counts. Fix obs[{key!r}] (each cell's total count) or pass n_counts_key=None to "
            "use the row sums of the count matrix."
        )


def check_gene_overlap(
    column_tokens: np.ndarray,
    identifiers: np.ndarray,
    vocab: Vocabulary,
    var: pd.DataFrame,
    gene_key: str | None,
    min_overlap: float,
) -> None:
    """Raise when too few genes are in the vocabulary, naming the likely cause and fix."""
    n_vars = len(column_tokens)
    n_mapped = int((column_tokens >= 0).sum())
    if n_vars and n_mapped / n_vars >= min_overlap and n_mapped > 0:
        return
    source = f"var[{gene_key!r}]" if gene_key else "var_names"
    kind = describe_identifiers(normalize_gene_ids(identifiers[:2000]))
    lines = [
        f"Only {n_mapped} of {n_vars} genes ({n_mapped / max(n_vars, 1):.1%}) in {source} are in "
        f"the {vocab.name} vocabulary ({vocab.n_genes} human genes); {source} holds {kind}."
    ]
    better = _better_columns(var, vocab, n_mapped, gene_key)
    if better:
        lines.append("Other columns map better: " + ", ".join(better) + ".")
    lines.append(
        "Geneformer needs human Ensembl gene IDs or symbols; pass gene_key= naming the var "
        f"column that holds them, or lower min_overlap (now {min_overlap}) if this is intended."
    )
    raise InputDataError(" ".join(lines))


def _better_columns(var: pd.DataFrame, vocab: Vocabulary, n_mapped: int, gene_key) -> list[str]:
    found = []
    for column in var.columns:
        if column == gene_key or (
            var[column].dtype.kind not in "OSUc"
            and not isinstance(var[column].dtype, pd.CategoricalDtype)
        ):
            continue
        hits = int((vocab.map_genes(var[column].to_numpy()) >= 0).sum())
        if hits > n_mapped:
            found.append(f"gene_key={column!r} ({hits} genes)")
    if gene_key is not None:
        hits = int((vocab.map_genes(var.index.to_numpy()) >= 0).sum())
        if hits > n_mapped:
            found.append(f"gene_key=None for var_names ({hits} genes)")
    return found
