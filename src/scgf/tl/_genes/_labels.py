"""Gene labels to vocabulary tokens: ``{class: [genes]}`` or a ``var`` column (array kernels
plus one reader of ``var``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ... import _logging

N_EXAMPLES = 5  # gene names shown in a message


@dataclass(frozen=True)
class GeneLabels:
    """Labelled genes as vocabulary tokens.

    Attributes
    ----------
    classes
        Class names; a class's id is its position.
    tokens
        Token id of every labelled gene (unique).
    labels
        Class id of every labelled gene.
    names
        The identifier the user gave for each gene (first one, where several map to a token).
    """

    classes: tuple[str, ...]
    tokens: np.ndarray
    labels: np.ndarray
    names: np.ndarray

    def token_labels(self, vocab_size: int, tokens: np.ndarray | None = None) -> np.ndarray:
        """Array indexed by token id: the class of ``tokens`` (default all labelled genes),
        ``-1`` for every other token; what :class:`scgf._train.TokenDataset` reads."""
        out = np.full(vocab_size, -1, dtype=np.int64)
        chosen = self.tokens if tokens is None else np.asarray(tokens, dtype=np.int64)
        out[chosen] = self.class_of(chosen)
        return out

    def class_of(self, tokens: np.ndarray) -> np.ndarray:
        """Class id of each of ``tokens`` (all labelled)."""
        lookup = dict(zip(self.tokens.tolist(), self.labels.tolist(), strict=True))
        return np.array([lookup[t] for t in np.asarray(tokens).tolist()], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Labelled genes per class."""
        n = np.bincount(self.labels, minlength=len(self.classes))
        return dict(zip(self.classes, n.tolist(), strict=True))


def _examples(names: Sequence) -> str:
    shown = ", ".join(str(n) for n in list(names)[:N_EXAMPLES])
    return shown + (", …" if len(names) > N_EXAMPLES else "")


def labels_from_dict(gene_labels: Mapping[str, Sequence[str]], vocab) -> GeneLabels:
    """Map ``{class: [gene symbols or Ensembl IDs]}`` through ``vocab``.

    Genes outside the vocabulary are left out with a warning (counts and a few names);
    a gene listed twice in one class counts once; a gene in two classes is an error.
    """
    if not isinstance(gene_labels, Mapping):
        raise TypeError(
            f"gene_labels is a {type(gene_labels).__name__}; pass {{class: [genes]}} (gene "
            "symbols or Ensembl IDs), or var_key= naming a var column of classes."
        )
    classes, tokens, labels, names = [], [], [], []
    unmapped: dict[str, list[str]] = {}
    for class_id, (name, genes) in enumerate(gene_labels.items()):
        if isinstance(genes, str):
            raise TypeError(
                f"gene_labels[{name!r}] is a string; give a list of genes, e.g. [{genes!r}]."
            )
        genes = [str(g) for g in genes]
        mapped = vocab.map_genes(np.asarray(genes, dtype=object)) if genes else np.zeros(0, int)
        missing = [g for g, t in zip(genes, mapped, strict=True) if t < 0]
        if missing:
            unmapped[str(name)] = missing
        classes.append(str(name))
        keep = mapped >= 0
        tokens.append(mapped[keep])
        labels.append(np.full(int(keep.sum()), class_id, dtype=np.int64))
        names.append(np.asarray(genes, dtype=object)[keep])
    return _assemble(classes, tokens, labels, names, unmapped, vocab)


def labels_from_var(var: pd.DataFrame, var_key: str, gene_ids: np.ndarray, vocab) -> GeneLabels:
    """Classes from the ``var`` column ``var_key`` (NaN = unlabelled), genes identified by
    ``gene_ids`` (one per variable: var names or the tokenizer's gene column)."""
    if var_key not in var.columns:
        raise KeyError(
            f"adata.var has no column {var_key!r} (columns: {', '.join(map(str, var.columns))})."
        )
    column = var[var_key]
    labelled = column.notna().to_numpy()
    values = column[labelled].astype(str).to_numpy()
    ids = np.asarray(gene_ids, dtype=object)[labelled]
    order = (
        [str(c) for c in column.cat.categories if str(c) in set(values)]
        if isinstance(column.dtype, pd.CategoricalDtype)
        else sorted(set(values))
    )
    return labels_from_dict({c: ids[values == c].tolist() for c in order}, vocab)


def _assemble(classes, tokens, labels, names, unmapped, vocab) -> GeneLabels:
    n_given = sum(len(t) for t in tokens) + sum(len(m) for m in unmapped.values())
    if len(classes) < 2:
        raise ValueError(
            f"gene_labels has {len(classes)} class(es) ({', '.join(classes) or 'none'}); a "
            "gene classifier needs at least two classes of genes."
        )
    token_all = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    label_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    name_all = np.concatenate(names) if names else np.zeros(0, object)
    if n_given == 0:
        raise ValueError(
            f"gene_labels lists no genes (classes: {', '.join(classes)}); give each class a "
            "list of gene symbols or Ensembl IDs."
        )
    if unmapped:
        n_missing = sum(len(m) for m in unmapped.values())
        where = "; ".join(f"{c}: {len(m)} ({_examples(m)})" for c, m in unmapped.items())
        if n_missing == n_given:
            raise ValueError(
                f"None of the {n_given} labelled genes maps to a token of the {vocab.name} "
                f"vocabulary ({where}). Use human gene symbols or Ensembl IDs of the model's "
                "vocabulary."
            )
        _logging.warn(
            f"{n_missing} of {n_given} labelled genes are not in the {vocab.name} vocabulary "
            f"and are left out ({where})."
        )
    # Conflicts: the same token in two classes (e.g. a symbol and its Ensembl ID).
    frame = pd.DataFrame({"token": token_all, "label": label_all, "name": name_all})
    per_token = frame.groupby("token")["label"].nunique()
    conflicting = per_token.index[per_token > 1].to_numpy()
    if len(conflicting):
        rows = frame[frame["token"].isin(conflicting)]
        shown = []
        for _, group in list(rows.groupby("token", sort=False))[:N_EXAMPLES]:
            names = ", ".join(classes[i] for i in sorted(set(group["label"])))
            shown.append(f"{group['name'].iloc[0]} ({names})")
        raise ValueError(
            f"{len(conflicting)} gene(s) are labelled with two or more classes: "
            f"{'; '.join(shown)}. Give each gene one class."
        )
    first = ~frame.duplicated("token").to_numpy()
    return GeneLabels(
        classes=tuple(classes),
        tokens=token_all[first].astype(np.int64),
        labels=label_all[first].astype(np.int64),
        names=name_all[first],
    )


def check_class_sizes(labels: GeneLabels, n_folds: int) -> None:
    """Each class needs at least ``n_folds`` genes (one per held-out fold; the reference asks
    for ≥ 5 with its 5 folds)."""
    small = {c: n for c, n in labels.counts().items() if n < n_folds}
    if small:
        listed = ", ".join(f"{c!r} has {n}" for c, n in small.items())
        raise ValueError(
            f"Too few labelled genes in the vocabulary for {n_folds}-fold cross-validation: "
            f"{listed} (each class needs at least n_folds={n_folds} genes). Label more genes, "
            "or lower n_folds."
        )
