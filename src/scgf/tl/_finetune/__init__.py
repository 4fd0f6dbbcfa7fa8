"""``scgf.tl.finetune``: fine-tuning Geneformer models to classify cells.

- :mod:`._api`: the AnnData shell (validates, then writes results only on success);
- :mod:`._labels`: label columns to class ids (deterministic class order, NaN left out);
- :mod:`._splits`: stratified, grouped or given train/validation/test splits;
- :mod:`._model`: the classifier (one head, or one per task), frozen layers, LoRA/QLoRA;
- :mod:`._training`: datasets, the class-weighted Trainer, predictions, history;
- :mod:`._run`: one run (arguments, resuming, saving, evaluating);
- :mod:`._search`: optuna hyperparameter search (study in SQLite, resumable);
- :mod:`._output`: the output folder's states.
"""

from ._api import finetune

__all__ = ["finetune"]
