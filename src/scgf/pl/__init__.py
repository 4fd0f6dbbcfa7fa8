"""Plots of scgf results, drawn through scanpy."""

__all__: list[str] = []
