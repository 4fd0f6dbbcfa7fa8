"""Tools that run Geneformer models: embeddings (perturbation and fine-tuning build on them)."""

from ._embed import embed

__all__ = ["embed"]
