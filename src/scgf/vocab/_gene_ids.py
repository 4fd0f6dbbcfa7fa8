"""Normalising gene identifiers before they are looked up in a vocabulary, and recognising
identifiers of other species, which would otherwise map to human genes once upper-cased."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Ensembl stable IDs of any species/feature type, with an optional ".N" version suffix.
_ENSEMBL_VERSIONED = re.compile(r"^(ENS[A-Z]*\d{6,})\.\d+(_PAR_Y)?$")
_ENSEMBL = re.compile(r"^ENS[A-Z]*\d{6,}$")

# Non-human Ensembl IDs carry a three-letter species code (human ones have none: ENSG…,
# ENST…, and ENSGR… for PAR genes, which has no third letter).
_ENSEMBL_SPECIES = re.compile(r"^ENS([A-Z]{3})([GTPE])\d{6,}(\.\d+)?$")
_ENSEMBL_CODES = {
    "MUS": "mouse",
    "RNO": "rat",
    "DAR": "zebrafish",
    "GAL": "chicken",
    "SSC": "pig",
    "BTA": "cattle",
    "OAR": "sheep",
    "CAF": "dog",
    "ECA": "horse",
    "MMU": "rhesus macaque",
    "MFA": "crab-eating macaque",
    "PTR": "chimpanzee",
    "XET": "frog",
    "OCU": "rabbit",
}
# Identifier systems of model organisms whose shape no human identifier has.
_OTHER_SYSTEMS = (
    (re.compile(r"^FBgn\d{7}$", re.IGNORECASE), "fly", "FlyBase IDs (FBgn…)"),
    (re.compile(r"^WBGene\d{8}$", re.IGNORECASE), "worm", "WormBase IDs (WBGene…)"),
    (re.compile(r"^ZDB-GENE-", re.IGNORECASE), "zebrafish", "ZFIN IDs (ZDB-GENE-…)"),
    (re.compile(r"^Y[A-P][LR]\d{3}[WC](-[A-Z])?$"), "yeast", "yeast systematic names (YAL001C…)"),
    (re.compile(r"^AT[1-5CM]G\d{5}$", re.IGNORECASE), "arabidopsis", "Arabidopsis IDs (AT1G…)"),
)
# Mouse and rat symbols are written with an upper-case first letter and the rest lower-case
# ("Cd3e", "Gm26917", "Mir1a-1"), mitochondrial genes as "mt-Co1"; human symbols are
# upper-case, except the open reading frames ("C1orf112", "CXorf21"), excluded here.
_MOUSE_SYMBOL = re.compile(
    r"^(?:[A-Z][a-z0-9]*[a-z][a-z0-9]*(?:[-.][a-z0-9]+)*|mt-[A-Z][a-z0-9]*)$"
)
_HUMAN_ORF = re.compile(r"^C(?:\d+|X|Y)orf\d+")
_MOUSE_STYLE = "mouse or rat"


@dataclass(frozen=True)
class SpeciesEvidence:
    """Identifiers that look like another species' genes.

    Attributes
    ----------
    species
        ``"mouse or rat"`` for mouse-style capitalised symbols, else the species an
        identifier system belongs to (``"mouse"``, ``"rat"``, ``"zebrafish"``, ``"fly"``, …).
    kind
        What the identifiers are, e.g. ``"rat Ensembl IDs (ENSRNOG…)"``.
    count
        How many identifiers look so.
    total
        How many identifiers were looked at (missing ones left out).
    examples
        The first few of them.
    """

    species: str
    kind: str
    count: int
    total: int
    examples: tuple[str, ...]

    def describe(self) -> str:
        """One sentence of evidence: how many identifiers, of which kind, with examples."""
        examples = ", ".join(repr(e) for e in self.examples)
        text = f"{self.count} of {self.total} identifiers are {self.kind}, e.g. {examples}"
        if self.species == _MOUSE_STYLE:
            text += "; human symbols are all upper-case"
        return text

    @property
    def capitalisation(self) -> bool:
        """Whether the evidence is mouse/rat-style capitalisation (symbols that upper-casing
        would map to their human namesakes) rather than another species' ID system."""
        return self.species == _MOUSE_STYLE


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


def _species_of(identifier: str) -> tuple[str, str] | None:
    """``(species, kind)`` when one identifier has another species' shape, else ``None``."""
    match = _ENSEMBL_SPECIES.match(identifier)
    if match:
        code, feature = match.groups()[:2]
        species = _ENSEMBL_CODES.get(code, "non-human")
        return species, f"{species} Ensembl IDs (ENS{code}{feature}…)"
    for pattern, species, kind in _OTHER_SYSTEMS:
        if pattern.match(identifier):
            return species, kind
    if _MOUSE_SYMBOL.match(identifier) and not _HUMAN_ORF.match(identifier):
        return _MOUSE_STYLE, "written as mouse and rat genes are (only the first letter upper-case)"
    return None


def non_human_evidence(
    ids: pd.Index | np.ndarray | list, *, min_fraction: float = 0.5, n_examples: int = 5
) -> SpeciesEvidence | None:
    """Whether most identifiers look like another species' genes, and the evidence.

    Identifiers are read as given (before upper-casing): mouse and rat symbols differ from
    human ones by their capitalisation only (``Cd3e`` and ``CD3E``), and would otherwise map
    to human genes. Other species are recognised by their identifier systems: Ensembl IDs with
    a species code (``ENSMUSG``, ``ENSRNOG``, ``ENSDARG``, …), FlyBase, WormBase, ZFIN, yeast
    and Arabidopsis IDs. All-lower-case symbols are not evidence (zebrafish symbols look so,
    but so do human symbols that were lower-cased).

    Parameters
    ----------
    ids
        Gene identifiers as stored in the data.
    min_fraction
        The share of (non-missing) identifiers of one species above which it is evidence.
    n_examples
        How many example identifiers to keep.

    Returns
    -------
    The evidence for the most frequent other species, or ``None`` when there is not enough.
    """
    keys = [str(k).strip() for k in pd.Series(np.asarray(ids, dtype=object)).dropna()]
    keys = [k for k in keys if k]
    if not keys:
        return None
    found = [(key, _species_of(key)) for key in keys]
    counts = Counter(hit for _, hit in found if hit is not None)
    if not counts:
        return None
    (species, kind), count = counts.most_common(1)[0]
    if count <= min_fraction * len(keys):
        return None
    examples = tuple(key for key, hit in found if hit == (species, kind))[:n_examples]
    return SpeciesEvidence(species, kind, count, len(keys), examples)


def describe_identifiers(keys: np.ndarray) -> str:
    """One phrase that says what kind of identifiers ``keys`` mostly are."""
    keys = [k for k in keys if k]
    if not keys:
        return "no identifiers (all missing)"
    n = len(keys)
    evidence = non_human_evidence(keys, n_examples=0)
    if evidence is not None and not evidence.capitalisation:
        return f"mostly {evidence.kind}; Geneformer's vocabularies are human"
    ensembl = sum(bool(_ENSEMBL.match(k)) for k in keys)
    if ensembl > n / 2:
        return "mostly Ensembl IDs"
    numeric = sum(k.isdigit() for k in keys)
    if numeric > n / 2:
        return "mostly numbers (a row index or Entrez IDs?)"
    return "mostly gene symbols or other names"
