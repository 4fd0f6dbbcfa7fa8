"""Normalising gene identifiers before they are looked up in a vocabulary."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Ensembl stable IDs of any species/feature type, with an optional ".N" version suffix.
_ENSEMBL_VERSIONED = re.compile(r"^(ENS[A-Z]*\d{6,})\.\d+(_PAR_Y)?$")
_ENSEMBL = re.compile(r"^ENS[A-Z]*\d{6,}$")
_MOUSE_ENSEMBL = re.compile(r"^ENSMUSG\d+$")


def normalize_gene_ids(ids: pd.Index | np.ndarray | list) -> np.ndarray:
    """Upper-case identifiers, strip surrounding space and drop Ensembl version suffixes.

    Symbols such as ``RP11-34P13.7`` keep their dots: only strings shaped like an Ensembl
    stable ID lose a ``.N`` suffix. Missing values become empty strings.

    Parameters
    ----------
    ids
        Gene identifiers (Ensembl IDs, symbols, aliases) in any case.

    Returns
    -------
    An object array of normalised keys, one per input identifier.
    """
    series = pd.Series(np.asarray(ids, dtype=object)).fillna("").astype(str).str.strip().str.upper()
    return series.str.replace(_ENSEMBL_VERSIONED, r"\1", regex=True).to_numpy(dtype=object)


def describe_identifiers(keys: np.ndarray) -> str:
    """One phrase that says what kind of identifiers ``keys`` mostly are."""
    keys = [k for k in keys if k]
    if not keys:
        return "no identifiers (all missing)"
    n = len(keys)
    mouse = sum(bool(_MOUSE_ENSEMBL.match(k)) for k in keys)
    ensembl = sum(bool(_ENSEMBL.match(k)) for k in keys)
    if mouse > n / 2:
        return "mostly mouse Ensembl IDs (ENSMUSG…); Geneformer's vocabularies are human"
    if ensembl > n / 2:
        return "mostly Ensembl IDs"
    numeric = sum(k.isdigit() for k in keys)
    if numeric > n / 2:
        return "mostly numbers (a row index or Entrez IDs?)"
    return "mostly gene symbols or other names"
