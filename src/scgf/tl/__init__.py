"""Tools that run Geneformer models (embeddings, perturbation, fine-tuning).

They build on :mod:`scgf.pp` tokens and the checkpoint registry in :mod:`scgf.models`.
"""

__all__: list[str] = []
