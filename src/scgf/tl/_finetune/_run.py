"""One fine-tuning run: datasets, ``TrainingArguments``, the Trainer, saving and evaluating."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import _logging
from ..._train._metrics import classification_metrics, trainer_metrics
from ..._train._saved import write_metadata
from ._output import clean_checkpoints, prepare_output_dir
from ._splits import SPLITS


@dataclass
class Result:
    """What the AnnData shell writes: metrics {task: {split: dict}}, the history, the search
    table, and per task the predicted class of every cell that was predicted (``rows``)."""

    metrics: dict
    history: pd.DataFrame
    search: pd.DataFrame | None
    predicted_rows: list[np.ndarray]
    predicted: list[np.ndarray]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@dataclass
class Job:
    """Everything a run is computed from; :meth:`run` trains, saves and evaluates."""

    record: Any
    model: Any
    vocab: Any
    tokens: Any
    token_params: dict
    obs_names: Any
    codes: np.ndarray
    tasks: dict[str, list[str]]
    split: np.ndarray
    multitask: bool
    output_dir: Path
    state: str
    params: dict
    lora: dict | None
    quantize_kwargs: dict
    device: str | None
    callbacks: list = field(default_factory=list)

    # -- inputs -------------------------------------------------------------------------
    def fingerprint(self, overrides: dict | None = None) -> dict:
        """What the training is computed from (checked when resuming)."""
        from ..._resume import cells_fingerprint, tokens_fingerprint

        return {
            "cells": cells_fingerprint(self.obs_names),
            "tokens": tokens_fingerprint(self.tokens),
            "labels": f"{self.tasks}:{_digest(self.codes)}",
            "split": _digest(self.split),
            "params": {**self.params, **(overrides or {})},
        }

    def dataset(self, which: int, *, by_length: bool = False):
        from ._training import LabelledCells

        codes = np.where((self.split == which)[:, None], self.codes, -1)
        return LabelledCells(self.tokens, codes, by_length=by_length)

    def arguments(self, output_dir: Path, overrides: dict | None = None):
        from ..._train import training_arguments

        p = self.params
        has_validation = bool((self.split == 1).any())
        base = dict(
            num_train_epochs=p["epochs"],
            learning_rate=p["learning_rate"],
            per_device_train_batch_size=p["batch_size"],
            per_device_eval_batch_size=p["batch_size"],
            weight_decay=p["weight_decay"],
            seed=p["random_state"],
            data_seed=p["random_state"],
            eval_strategy="epoch" if has_validation else "no",
            save_strategy="epoch",
            logging_strategy="epoch",
            load_best_model_at_end=has_validation,
            metric_for_best_model="macro_f1",
            greater_is_better=True,
            save_total_limit=1,  # with load_best_model_at_end: the best and the last
            bf16=p["precision"] == "bf16",
            fp16=p["precision"] == "fp16",
            use_cpu=self.device == "cpu",
            # Every parameter gets a gradient (multi-task heads without labels in a batch
            # add 0 × their logits), so DDP need not search for unused ones.
            ddp_find_unused_parameters=False,
        )
        return training_arguments(output_dir, **{**base, **p["training_args"], **(overrides or {})})

    def model_init(self, trial=None):
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights" bars at every (re)build
        try:
            return self._build()
        finally:
            if shown:
                hf_logging.enable_progress_bar()

    def _build(self):
        from ..._train import config_overrides
        from ._model import build

        return build(
            self.record,
            self.model,
            self.tasks,
            multitask=self.multitask,
            pooling=self.params["pooling"],
            task_weights=self.params["task_weights"],
            freeze_layers=self.params["freeze_layers"],
            lora=self.lora,
            quantize_kwargs=self.quantize_kwargs,
            config_overrides=config_overrides(attention_dropout=self.params["attention_dropout"]),
        )

    def trainer(self, args, *, search: bool = False):
        from transformers import EarlyStoppingCallback
        from transformers.trainer_callback import PrinterCallback

        from ..._train import LogCallback
        from ._training import FinetuneTrainer, class_weight_tensors, collator

        train = self.dataset(0)
        validation = self.dataset(1, by_length=True) if (self.split == 1).any() else None
        callbacks = [LogCallback(), *([] if search else self.callbacks)]
        patience = self.params["early_stopping_patience"]
        if patience is not None and validation is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
        weights = self.params["task_weights"]
        if isinstance(weights, dict):
            weights = [float(weights[t]) for t in self.tasks]
        trainer = FinetuneTrainer(
            model_init=self.model_init,
            args=args,
            train_dataset=train,
            eval_dataset=validation,
            data_collator=collator(self.vocab),
            compute_metrics=trainer_metrics,
            callbacks=callbacks,
            class_weights=class_weight_tensors(
                self.params["class_weights"], self.codes[self.split == 0], self.tasks
            ),
            task_weights=weights,
            batch_tokens=self.params["batch_tokens"],
        )
        trainer.remove_callback(PrinterCallback)  # LogCallback logs through scgf instead
        return trainer

    # -- the run --------------------------------------------------------------------------
    def run(self, **options) -> Result:
        """Train (after a search with ``n_trials``), save, evaluate."""
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' bars at every load and checkpoint
        try:
            return self._run(**options)
        finally:
            if shown:
                hf_logging.enable_progress_bar()

    def _run(self, *, n_trials, search_space, storage, overwrite, resume) -> Result:
        from ..._train import last_checkpoint

        args = self.arguments(self.output_dir)
        _barrier(args)  # every process has checked output_dir before anything is written
        with args.main_process_first(local=False):
            if args.process_index == 0:
                prepare_output_dir(self.output_dir, self.state)
        search, overrides = None, {}
        if n_trials:
            from ._search import run_search

            overrides, search = run_search(
                self, n_trials=n_trials, search_space=search_space, storage=storage
            )
            args = self.arguments(self.output_dir, overrides)
        fingerprint = self.fingerprint(overrides)
        checkpoint = None
        with args.main_process_first(local=False):
            # After a search the final training starts over (its best setting may differ).
            restart = bool(n_trials) or self.state != "resume"
            checkpoint = last_checkpoint(self.output_dir, fingerprint, restart=restart)
        if checkpoint is not None:
            _logging.info(f"    resuming from {checkpoint}")
        trainer = self.trainer(args)
        trainer.train(resume_from_checkpoint=checkpoint)
        self._save(trainer, args, overrides)
        result = self._evaluate(trainer, search)
        if args.process_index == 0:
            self._write_metadata(trainer, result, overrides)
            clean_checkpoints(self.output_dir)
        _barrier(args)
        return result

    def _save(self, trainer, args, overrides) -> None:
        if self.lora is not None:
            from ..._train._lora import save_adapter

            if args.process_index == 0:
                save_adapter(trainer.model, self.output_dir, base_model=self.params["model"])
        else:
            trainer.save_model(str(self.output_dir))
        if args.process_index == 0 and self.record.folder is not None:
            # A custom vocabulary travels with the model (published ones resolve by shape).
            from ...vocab._vocabulary import find_dictionary_files

            for path in (find_dictionary_files(self.record.folder) or {}).values():
                shutil.copyfile(path, self.output_dir / Path(path).name)

    def _evaluate(self, trainer, search) -> Result:
        from ._training import history_frame, predict_split

        n_tasks = len(self.tasks)
        metrics = {task: {} for task in self.tasks}
        rows_of: list[list[np.ndarray]] = [[] for _ in range(n_tasks)]
        predicted: list[list[np.ndarray]] = [[] for _ in range(n_tasks)]
        for which, name in enumerate(SPLITS):
            dataset = self.dataset(which, by_length=True)
            if len(dataset) == 0:
                continue
            probabilities = predict_split(trainer, dataset, n_tasks)
            rows = np.asarray(dataset.index)
            for t, (task, classes) in enumerate(self.tasks.items()):
                proba = probabilities[t]
                labelled = self.codes[rows, t] >= 0
                metrics[task][name] = classification_metrics(
                    self.codes[rows[labelled], t], proba[labelled], classes
                )
                rows_of[t].append(rows)
                predicted[t].append(proba.argmax(axis=1))
        return Result(
            metrics=metrics,
            history=history_frame(trainer.state.log_history),
            search=search,
            predicted_rows=[np.concatenate(r) if r else np.zeros(0, int) for r in rows_of],
            predicted=[np.concatenate(p) if p else np.zeros(0, int) for p in predicted],
        )

    def _write_metadata(self, trainer, result: Result, overrides: dict) -> None:
        import dataclasses

        from transformers import TrainingArguments

        # Field defaults, not a second TrainingArguments (which resets the process state).
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(TrainingArguments)
            if f.default is not dataclasses.MISSING
        }
        changed = {
            k: v
            for k, v in trainer.args.to_dict().items()
            if k in defaults
            and str(getattr(defaults[k], "value", defaults[k])) != str(v)
            and k not in ("output_dir", "logging_dir", "hub_token")
            and not (defaults[k] is None and not v)
        }
        # scgf's own training settings (not TrainingArguments fields), when given
        for key in ("attention_dropout", "batch_tokens"):
            if self.params[key] is not None:
                changed[key] = self.params[key]
        metrics = result.metrics
        if not self.multitask:
            (metrics,) = metrics.values()
        name = self.record.name if self.record.kind != "loaded" else self.params["model"]
        write_metadata(
            self.output_dir,
            {
                "task": "multitask_cell_classification"
                if self.multitask
                else "cell_classification",
                "tasks": self.tasks,
                "base_model": str(name),
                "vocabulary": {"name": self.vocab.name, "fingerprint": self.vocab.fingerprint},
                "tokenization": self.token_params,
                "metrics": metrics,
                "training_arguments": changed,
                "lora": self.lora,
                "search": {"best": overrides} if overrides else None,
            },
        )


def _barrier(args) -> None:
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
