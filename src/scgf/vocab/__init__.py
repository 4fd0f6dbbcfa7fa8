"""Geneformer vocabularies: token ids, gene medians and gene-ID mapping."""

from ._build import build, gene_medians
from ._gene_ids import normalize_gene_ids
from ._vocabulary import SPECIAL_TOKENS, Vocabulary, find_dictionary_files

__all__ = [
    "SPECIAL_TOKENS",
    "Vocabulary",
    "build",
    "find_dictionary_files",
    "gene_medians",
    "normalize_gene_ids",
]
