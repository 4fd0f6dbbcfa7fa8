"""Tools that run Geneformer models: embeddings and in silico perturbation."""

from ._embed import embed
from ._perturb import perturb

__all__ = ["embed", "perturb"]
