"""Plots of scgf results, drawn through scanpy/matplotlib."""

from ._embedding import embedding
from ._perturbation import perturbation

__all__ = ["embedding", "perturbation"]
