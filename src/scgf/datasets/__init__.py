"""Small real datasets for trying scgf out."""

from ._pbmc68k import pbmc68k_reduced

__all__ = ["pbmc68k_reduced"]
