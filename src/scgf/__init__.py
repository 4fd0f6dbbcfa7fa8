"""scgf: Geneformer single-cell foundation models in scanpy/AnnData workflows."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, get, models, pl, pp, tl, vocab
from ._settings import settings

try:
    __version__ = version("scgf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["datasets", "get", "models", "pl", "pp", "settings", "tl", "vocab"]
