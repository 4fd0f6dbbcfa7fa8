"""Gene classification: fine-tune on gene labels with cross-validation over genes
(:func:`finetune_genes`), and predict the class of every expressed gene (:func:`predict_genes`).

- :mod:`._labels`: ``{class: [genes]}`` or a ``var`` column → vocabulary tokens;
- :mod:`._folds`: stratified folds over genes, validation/test split, binary balancing;
- :mod:`._training`: one training on ``scgf._train``, its evaluation and saved folder;
- :mod:`._aggregate`: per-token probabilities averaged over the cells holding each gene;
- :mod:`._search`: the hyperparameter search's target (the first fold, scored per gene);
- :mod:`._api`: the AnnData shells.
"""

from ._api import finetune_genes, predict_genes

__all__ = ["finetune_genes", "predict_genes"]
