"""Hyperparameter search with optuna through ``Trainer.hyperparameter_search``.

The study lives in an optuna storage, by default ``output_dir/search.db`` (SQLite), so a
later call with ``resume=True`` adds trials to it and several machines can share one
database (``storage=``). The best trial's setting is then trained into ``output_dir``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from ... import _logging
from ..._optional import import_optional
from ._output import SEARCH_DB, SEARCH_DIR

STUDY_NAME = "scgf_finetune"

# The reference's cell-classifier search space (spec §6.4).
REFERENCE_SPACE = {
    "num_train_epochs": [1],
    "learning_rate": ("log", 1e-6, 1e-3),
    "weight_decay": (0.0, 0.3),
    "lr_scheduler_type": ["linear", "cosine", "polynomial"],
    "warmup_steps": ("int", 100, 2000),
    "seed": ("int", 0, 100),
}


class SearchSpaceError(ValueError):
    """A search space entry is not a range, a log range or a list of choices."""


def _suggest(trial, name: str, spec):
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    if isinstance(spec, tuple) and len(spec) == 3 and spec[0] in ("log", "int"):
        kind, low, high = spec
        if kind == "int":
            return trial.suggest_int(name, int(low), int(high))
        return trial.suggest_float(name, float(low), float(high), log=True)
    if isinstance(spec, tuple) and len(spec) == 2:
        low, high = spec
        if isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, float(low), float(high))
    raise SearchSpaceError(
        f"search_space[{name!r}]={spec!r}; use (low, high), ('log', low, high), "
        "('int', low, high) or a list of choices."
    )


def hp_space(search_space: Mapping | Callable | None) -> Callable:
    """``trial -> {TrainingArguments field: value}`` of a search space."""
    if callable(search_space):
        return search_space
    space = dict(REFERENCE_SPACE if search_space is None else search_space)
    from transformers import TrainingArguments

    fields = set(TrainingArguments.__dataclass_fields__)
    unknown = sorted(set(space) - fields)
    if unknown:
        raise SearchSpaceError(
            f"search_space names {unknown}, which are not TrainingArguments fields."
        )
    for name, spec in space.items():  # fail before any trial runs
        if not isinstance(spec, list | tuple):
            raise SearchSpaceError(f"search_space[{name!r}]={spec!r} is not a range or list.")

    def suggest(trial) -> dict:
        return {name: _suggest(trial, name, spec) for name, spec in space.items()}

    return suggest


def trials_table(study) -> pd.DataFrame:
    """The study's trials as a frame ``write_h5ad`` stores (times as text)."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds()
    if "state" in frame:
        frame["state"] = frame["state"].astype(str)
    frame.columns = [str(c) for c in frame.columns]
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def run_search(job, *, n_trials: int, search_space, storage: str | None):
    """Run ``n_trials`` more trials; returns (best setting, trial table)."""
    optuna = import_optional("optuna", feature="Hyperparameter search (n_trials=)")
    from ..._resume import as_text, check_same

    if not (job.split == 1).any():
        raise ValueError(
            "A hyperparameter search (n_trials > 0) picks the best trial by validation "
            "macro-F1, but there is no validation split; give split_sizes with a validation "
            "fraction, or validation cells in split_key."
        )
    url = storage or f"sqlite:///{(job.output_dir / SEARCH_DB).resolve()}"
    fingerprint = job.fingerprint({"training_args": {}, "n_trials": None})
    args = job.arguments(job.output_dir / SEARCH_DIR, {"save_total_limit": 1})
    study = None
    if args.process_index == 0:
        study = optuna.create_study(
            storage=url, study_name=STUDY_NAME, direction="maximize", load_if_exists=True
        )
        saved = study.user_attrs.get("fingerprint")
        if saved is None:
            study.set_user_attr("fingerprint", as_text(fingerprint))
        else:
            check_same(
                saved,
                fingerprint,
                url,
                "search with the same data and settings, or give another output_dir/storage.",
            )
    space = hp_space(search_space)
    trainer = job.trainer(args, search=True)
    start = _logging.info(f"    hyperparameter search: {n_trials} trials, study in {url}")
    # optuna logs every trial at INFO into notebooks; scgf's own lines say what matters
    shown = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _hyperparameter_search(trainer, optuna, space, n_trials, url)
    finally:
        optuna.logging.set_verbosity(shown)
    best, table = {}, None
    if args.process_index == 0:
        study = optuna.load_study(study_name=STUDY_NAME, storage=url)
        best, table = dict(study.best_trial.params), trials_table(study)
    best = _broadcast(best, args)
    if args.process_index != 0:
        return best, None
    _logging.info(
        f"    best trial {study.best_trial.number}: eval macro-F1 "
        f"{study.best_trial.value:.4f} with {best}",
        time=start,
    )
    return best, table


def _broadcast(value, args):
    """Process 0's ``value`` on every process (under torchrun)."""
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _hyperparameter_search(trainer, optuna, space, n_trials: int, url: str) -> None:
    """transformers' optuna search, maximising validation macro-F1, pruning bad trials."""
    trainer.hyperparameter_search(
        hp_space=space,
        compute_objective=lambda metrics: metrics["eval_macro_f1"],
        n_trials=n_trials,
        direction="maximize",
        backend="optuna",
        storage=url,
        study_name=STUDY_NAME,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=1),
    )
