"""The gene classifier's hyperparameter search: the first fold as a search target of
:func:`scgf.tl._finetune._search.search` (optuna through ``Trainer.hyperparameter_search``).

Every trial trains a fresh classifier on the first fold's training genes (balanced as the
folds are) and is scored by the per-gene macro-F1 of that fold's **validation** genes: each
gene's per-token probabilities averaged over the cells that express it, the metric the folds
report under ``validation``. The fold's test genes and every other fold's held-out split are
never evaluated by the search.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._finetune._search import NO_VALIDATION
from ._folds import GeneFold
from ._labels import GeneLabels
from ._training import TrainingPlan

STUDY_NAME = "scgf_finetune_genes"


@dataclass
class GeneSearch:
    """One fold's training genes, trained, and its validation genes, evaluated per gene."""

    plan: TrainingPlan
    tokens: sp.csr_matrix
    labels: GeneLabels
    fold: GeneFold
    train_index: np.ndarray  # the fold's training genes after balancing
    vocab_size: int
    output_dir: Path
    base_fingerprint: dict
    batch_tokens: int | None = None
    study_name: str = STUDY_NAME

    def check_validation(self) -> None:
        if len(self.fold.validation) == 0:
            raise ValueError(
                NO_VALIDATION + f"fold {self.fold.index} has no validation genes; label more "
                "genes per class (each fold's held-out genes are split into validation and "
                "test), or pass n_trials=0."
            )

    def fingerprint(self) -> dict:
        """The data, the settings the trials start from, and the fold's genes."""
        genes = self.labels.tokens
        return {
            **self.base_fingerprint,
            "search_fold": self.fold.index,
            "train": [[int(genes[i]), int(self.labels.labels[i])] for i in self.train_index],
            "validation": [int(genes[i]) for i in self.fold.validation],
        }

    def arguments(self, output_dir: Path):
        from ._training import arguments

        # An evaluation each epoch lets optuna prune a bad trial early; trials keep no
        # checkpoints (they are not resumed, and the best setting is trained again).
        return arguments(self.plan, output_dir, eval_strategy="epoch", save_strategy="no")

    def trainer(self, args):
        from ._training import gene_trainer, label_array

        train = self.train_index
        validation = self.fold.validation
        return gene_trainer(
            self.plan,
            self.tokens,
            label_array(self.labels.tokens[train], self.labels.labels[train], self.vocab_size),
            args,
            eval_labels=label_array(
                self.labels.tokens[validation], self.labels.labels[validation], self.vocab_size
            ),
            evaluator=self.evaluate,
        )

    def evaluate(self, model) -> dict:
        """Per-gene accuracy, macro-F1 (and ROC AUC for two classes) of the validation genes,
        computed as the folds compute theirs (fp32, the inference runner)."""
        from ..._train._metrics import classification_metrics
        from ._training import cells_with, merged, probabilities

        if self.plan.lora is not None:  # training goes on: merge a copy
            model = merged(copy.deepcopy(model), self.plan)
        genes = self.labels.tokens[self.fold.validation]
        rows = cells_with(self.tokens, genes, self.vocab_size)
        proba, _ = probabilities(
            model, self.plan, self.tokens[rows], token_budget=self.batch_tokens
        ).mean()
        metrics = classification_metrics(
            self.labels.labels[self.fold.validation], proba[genes], self.plan.classes
        )
        return {
            k: float(metrics[k])
            for k in ("macro_f1", "accuracy", "roc_auc")
            if metrics.get(k) is not None
        }
