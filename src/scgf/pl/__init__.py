"""Plots of scgf results, drawn through scanpy."""

from ._embedding import embedding

__all__ = ["embedding"]
