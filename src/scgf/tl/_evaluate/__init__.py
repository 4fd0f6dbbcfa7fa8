"""``scgf.tl.evaluate``: embeddings scored against PCA baselines (scib-metrics + probes)."""

from ._api import EmbeddingMismatchError, evaluate

__all__ = ["EmbeddingMismatchError", "evaluate"]
