"""Training and evaluating the classifier with ``transformers.Trainer`` (scgf's ``_train``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..._train import ClassificationCollator, LengthGroupedTrainer, TokenDataset
from ..._train._data import IGNORE_INDEX

# Trainer log keys that are run summaries, not per-evaluation history.
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")


class LabelledCells(TokenDataset):
    """A :class:`~scgf._train.TokenDataset` whose ``labels`` are one class per task.

    ``codes`` is (n_cells, n_tasks) with negative values for cells without a label; a cell
    is an example when it has a label for at least one task (and tokens). Single-task items
    carry a scalar label (``BertForSequenceClassification``), multi-task items a row with
    ``-100`` for the tasks the cell has no label for.
    """

    def __init__(self, tokens, codes: np.ndarray, *, by_length: bool = False):
        codes = np.asarray(codes, dtype=np.int64).reshape(len(codes), -1)
        super().__init__(tokens, cell_labels=np.where((codes >= 0).any(1), 0, -1))
        self.codes = np.where(codes >= 0, codes, IGNORE_INDEX)
        if by_length:  # evaluation: longest first, so batches hold cells of similar length
            order = np.argsort(-self.lengths, kind="stable")
            self.index, self.lengths = self.index[order], self.lengths[order]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i = int(self.index[item])
        example = {"input_ids": torch.from_numpy(self._row(i))}
        labels = self.codes[i]
        example["labels"] = torch.tensor(labels[0] if len(labels) == 1 else labels)
        return example


class FinetuneTrainer(LengthGroupedTrainer):
    """``LengthGroupedTrainer`` with class-weighted cross-entropy (imbalanced labels).

    ``class_weights`` holds one weight tensor per task (``None``: plain cross-entropy, the
    model's own loss); ``task_weights`` the multi-task loss weights.
    """

    def __init__(self, *args, class_weights=None, task_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.task_weights = task_weights
        if class_weights is not None:
            self.model_accepts_loss_kwargs = False  # a mean loss: Trainer scales accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        logits = outputs.logits
        if isinstance(logits, torch.Tensor):
            logits, labels = (logits,), labels.view(-1, 1)
        weights = self.task_weights or [1.0] * len(logits)
        loss = logits[0].new_zeros((), dtype=torch.float32)
        for t, (task_logits, task_weight) in enumerate(zip(logits, weights, strict=True)):
            target = labels[:, t].long()
            if not (target != IGNORE_INDEX).any():
                loss = loss + 0.0 * task_logits.sum()  # keeps every head in the graph (DDP)
                continue
            loss = loss + task_weight * F.cross_entropy(
                task_logits.float(),
                target,
                weight=self.class_weights[t].to(task_logits.device),
                ignore_index=IGNORE_INDEX,
            )
        return (loss, outputs) if return_outputs else loss


def balanced_weights(codes: np.ndarray, n_classes: int) -> torch.Tensor:
    """sklearn's "balanced" class weights, ``n / (n_classes * count)``, of the training
    cells (a class absent from them gets weight 1)."""
    codes = codes[codes >= 0]
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(codes) / (n_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def class_weight_tensors(
    class_weights, train_codes: np.ndarray, tasks: dict[str, list[str]]
) -> list[torch.Tensor] | None:
    """``class_weights`` (``None``, ``"balanced"``, or {task or class: weight}) as tensors."""
    if class_weights is None:
        return None
    out = []
    for t, (task, classes) in enumerate(tasks.items()):
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise ValueError(
                    f"class_weights={class_weights!r}; use None, 'balanced' or a dict "
                    "{class: weight}."
                )
            out.append(balanced_weights(train_codes[:, t], len(classes)))
            continue
        given = class_weights.get(task, class_weights) if len(tasks) > 1 else class_weights
        if isinstance(given, str):
            out.append(balanced_weights(train_codes[:, t], len(classes)))
            continue
        unknown = set(map(str, given)) - set(classes)
        if unknown:
            raise ValueError(
                f"class_weights names {sorted(unknown)}, not classes of {task!r} ({classes})."
            )
        values = {str(k): float(v) for k, v in dict(given).items()}
        out.append(torch.tensor([values.get(c, 1.0) for c in classes], dtype=torch.float32))
    return out


def predict_split(trainer, dataset: LabelledCells, n_tasks: int) -> list[np.ndarray]:
    """Softmax probabilities of the dataset's cells, one (n_examples, classes) array per
    task, in the dataset's ``index`` order (gathered over processes under torchrun)."""
    if len(dataset) == 0:
        return [None] * n_tasks
    logits = trainer.predict(dataset).predictions
    if not isinstance(logits, tuple | list):
        logits = (logits,)
    return [
        torch.softmax(torch.from_numpy(np.asarray(x, dtype=np.float32)), dim=-1).numpy()
        for x in logits[:n_tasks]
    ]


def history_frame(log_history: Sequence[dict]) -> pd.DataFrame:
    """The Trainer's log as one row per logged step: epoch, step, train_loss, eval_* …"""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if any(k in entry for k in _SUMMARY_KEYS):
            continue
        step = int(entry.get("step", 0))
        row = rows.setdefault(step, {"epoch": entry.get("epoch"), "step": step})
        for key, value in entry.items():
            if key in ("step",):
                continue
            row["train_loss" if key == "loss" else key] = value
    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        return pd.DataFrame(columns=["epoch", "step", "train_loss", "eval_loss"])
    for column in frame.columns:
        if column != "step":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return frame.sort_values("step").reset_index(drop=True)


def collator(vocab) -> ClassificationCollator:
    """Right-padding with the vocabulary's ``<pad>``."""
    return ClassificationCollator(pad_id=vocab.pad_id)
