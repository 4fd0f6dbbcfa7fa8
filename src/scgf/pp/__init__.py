"""Preprocessing: turning counts into Geneformer tokens."""

from ._checks import InputDataError
from ._tokenize import tokenize

__all__ = ["InputDataError", "tokenize"]
