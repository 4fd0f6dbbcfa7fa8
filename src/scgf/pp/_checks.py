"""Checks that tokenization input is what Geneformer expects, with messages that say what to do."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _logging
from ..vocab import Vocabulary
from ..vocab._gene_ids import (
    SpeciesEvidence,
    describe_identifiers,
    non_human_evidence,
    normalize_gene_ids,
)


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
    """Raise when too few genes are in the vocabulary or the genes are not human, naming the
    likely cause and fix; log which identifiers were read when ``var`` offers several.

    Parameters
    ----------
    column_tokens
        Token id of each variable, ``-1`` where it is not in the vocabulary.
    identifiers
        The identifiers as stored (before upper-casing), one per variable.
    vocab
        The vocabulary they were mapped through.
    var
        The AnnData's ``var``, whose other columns may hold better identifiers.
    gene_key
        The ``var`` column read, ``None`` for ``var_names``.
    min_overlap
        Fewest fraction of genes that must be in the vocabulary.
    """
    n_vars = len(column_tokens)
    n_mapped = int((column_tokens >= 0).sum())
    source = _label(gene_key)
    overlap_ok = n_vars > 0 and n_mapped > 0 and n_mapped / n_vars >= min_overlap
    # On the way to success, evenly spaced samples of the identifiers decide (mapping every
    # text column of a 30k-gene var in full costs ~0.2 s per call); errors use everything.
    sample = _sample_rows(n_vars)
    human_vocab = _is_human(vocab)
    evidence = non_human_evidence(identifiers[sample]) if human_vocab else None
    if overlap_ok and evidence is None:
        others = _other_sources(var.iloc[sample], vocab, gene_key)
        usable = max(1, min_overlap * len(sample))
        alternatives = [o for o in others if o.hits >= usable and not o.same]
        if alternatives:  # several columns hold usable identifiers: say which one was read
            also = ", ".join(f"{o.label} ({o.hits / len(sample):.0%})" for o in alternatives)
            _logging.info(
                f"    gene identifiers from {source} ({n_mapped} of {n_vars} genes in the "
                f"vocabulary); {also} could be read instead: pass gene_key= to choose"
            )
        return
    others = _other_sources(var, vocab, gene_key)
    # a vocabulary of another species (built with scgf.vocab.build) takes its own genes
    evidence = non_human_evidence(identifiers) if human_vocab else None
    if evidence is not None:
        raise InputDataError(
            _non_human_message(evidence, source, gene_key, n_mapped, n_vars, overlap_ok, vocab)
            + _human_columns(others)
        )
    if overlap_ok:
        return
    kind = describe_identifiers(normalize_gene_ids(identifiers[:2000]))
    species = "human genes" if human_vocab else "genes"
    lines = [
        f"Only {n_mapped} of {n_vars} genes ({n_mapped / max(n_vars, 1):.1%}) in {source} are in "
        f"the {vocab.name} vocabulary ({vocab.n_genes} {species}); {source} holds {kind}."
    ]
    better = [o.hint + f" ({o.hits} genes)" for o in others if o.hits > n_mapped]
    if better:
        lines.append("Other columns map better: " + ", ".join(better) + ".")
    needs = "human Ensembl gene IDs or symbols" if human_vocab else "the vocabulary's gene IDs"
    lines.append(
        f"Geneformer needs {needs}; pass gene_key= naming the var "
        f"column that holds them, or lower min_overlap (now {min_overlap}) if this is intended."
    )
    raise InputDataError(" ".join(lines))


# Identifiers looked at per column when deciding that all is well.
SAMPLE_SIZE = 2000


def _is_human(vocab: Vocabulary) -> bool:
    """Whether ``vocab``'s genes are human (the published vocabularies; a custom one may hold
    another species' Ensembl IDs)."""
    genes = np.asarray(vocab.gene_ids, dtype=object)
    return non_human_evidence(genes[_sample_rows(len(genes))]) is None


def _sample_rows(n: int) -> np.ndarray:
    """Up to ``SAMPLE_SIZE`` evenly spaced row positions of ``n``."""
    return np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLE_SIZE)).astype(int))


def _label(gene_key: str | None) -> str:
    return f"var[{gene_key!r}]" if gene_key else "var_names"


@dataclass(frozen=True)
class _Source:
    """Another place in ``var`` that holds identifiers."""

    label: str  # "var['ensembl_id']" or "var_names"
    hint: str  # "gene_key='ensembl_id'" or "gene_key=None for var_names"
    hits: int  # genes it maps to the vocabulary
    values: np.ndarray
    same: bool  # the same identifiers as those read


def _other_sources(var: pd.DataFrame, vocab: Vocabulary, gene_key: str | None) -> list[_Source]:
    """The text columns of ``var`` (and ``var_names``) other than the one read, with how many
    genes each maps to the vocabulary, best first."""
    used = var.index if gene_key is None else var[gene_key]
    used = pd.Series(np.asarray(used, dtype=object)).fillna("").astype(str).to_numpy()
    candidates: list[tuple[str, str, np.ndarray]] = []
    for column in var.columns:
        dtype = var[column].dtype
        if column == gene_key or (
            dtype.kind not in "OSU" and not isinstance(dtype, pd.CategoricalDtype)
        ):
            continue
        candidates.append((_label(column), f"gene_key={column!r}", var[column].to_numpy()))
    if gene_key is not None:
        candidates.append(("var_names", "gene_key=None for var_names", var.index.to_numpy()))
    found = []
    for label, hint, values in candidates:
        hits = int((vocab.map_genes(values) >= 0).sum())
        if hits:
            text = pd.Series(np.asarray(values, dtype=object)).fillna("").astype(str).to_numpy()
            found.append(_Source(label, hint, hits, values, bool(np.array_equal(text, used))))
    return sorted(found, key=lambda s: -s.hits)


def _non_human_message(
    evidence: SpeciesEvidence,
    source: str,
    gene_key: str | None,
    n_mapped: int,
    n_vars: int,
    overlap_ok: bool,
    vocab: Vocabulary,
) -> str:
    looks = f"{source} looks like {evidence.species} genes: {evidence.describe()}."
    if overlap_ok and evidence.capitalisation:
        # Upper-cased, mouse and rat symbols match their human namesakes: say why that is wrong.
        lines = [
            looks,
            f"Upper-cased, they match {n_mapped} of {n_vars} genes of the {vocab.name} "
            "vocabulary, but a gene of another species is not its human namesake.",
        ]
    else:
        lines = [
            f"Only {n_mapped} of {n_vars} genes ({n_mapped / max(n_vars, 1):.1%}) in {source} "
            f"are in the {vocab.name} vocabulary ({vocab.n_genes} human genes), and {looks}"
        ]
    lines.append(
        "Geneformer's vocabularies are human: map the genes to their human orthologs first "
        "(e.g. with an ortholog table from Ensembl BioMart or MGI) and tokenize those, or pass "
        "gene_key= naming a var column of human Ensembl IDs or symbols."
    )
    if evidence.capitalisation:
        column = "adata.var_names" if gene_key is None else f"adata.var[{gene_key!r}]"
        lines.append(
            "If these are human genes written in mouse style, upper-case them first: "
            f"{column} = {column}.str.upper()."
        )
    return " ".join(lines)


def _human_columns(others: list[_Source]) -> str:
    """A sentence naming the other identifier columns that do not look non-human."""
    human = [
        f"{o.hint} ({o.hits} genes)"
        for o in others
        if not o.same and non_human_evidence(o.values) is None
    ]
    return f" Columns with identifiers that look human: {', '.join(human)}." if human else ""
