"""Hyperparameter search with optuna through ``Trainer.hyperparameter_search``.

The search runs on a :class:`SearchTarget`: anything that builds the ``TrainingArguments``
and a ``Trainer`` (with ``model_init``, whose ``evaluate()`` reports ``eval_macro_f1``), says
what the study is computed from (its fingerprint) and whether it has validation data. The
cell classifier's job (:func:`run_search`) and the gene classifier's first fold
(``scgf.tl._genes._search``) are two such targets.

The study lives in an optuna storage, by default ``output_dir/search.db`` (SQLite), so a
later call with ``resume=True`` adds trials to it and several machines can share one
database (``storage=``). The best trial's setting is then trained by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

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

NO_VALIDATION = (
    "A hyperparameter search (n_trials > 0) picks the best trial by validation macro-F1, but "
)


class SearchSpaceError(ValueError):
    """A search space entry is not a range, a log range or a list of choices."""


class SearchTarget(Protocol):
    """What a hyperparameter search trains and evaluates.

    Attributes
    ----------
    output_dir
        The run's folder: the default study database (``search.db``) and the trials'
        folders (``search/``) go there.
    study_name
        The optuna study's name in the storage.
    """

    output_dir: Path
    study_name: str

    def check_validation(self) -> None:
        """Raise ``ValueError`` when there is no validation data to pick a trial by."""

    def fingerprint(self) -> dict:
        """What the study is computed from (data and settings, not the searched ones)."""

    def arguments(self, output_dir: Path) -> Any:
        """The ``TrainingArguments`` every trial starts from (trial folders under
        ``output_dir``)."""

    def trainer(self, args) -> Any:
        """A ``transformers.Trainer`` with ``model_init`` whose ``evaluate()`` returns
        ``eval_macro_f1``."""


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


def storage_url(target: SearchTarget, storage: str | None) -> str:
    """The optuna storage of the study: ``storage``, else SQLite in ``output_dir``."""
    return storage or f"sqlite:///{(Path(target.output_dir) / SEARCH_DB).resolve()}"


def _check_fingerprint(study, target: SearchTarget, url: str) -> None:
    """Tie the study to what it is computed from: set on a new study, checked on a stored one."""
    from ..._resume import as_text, check_same

    fingerprint = target.fingerprint()
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


def _check_choices(study, search_space: Mapping | Callable | None, url: str) -> None:
    """Refuse a list of choices that differs from the one the stored study searched: optuna
    cannot change a categorical parameter's choices within a study (ranges may change)."""
    if callable(search_space):
        return
    space = REFERENCE_SPACE if search_space is None else search_space
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            choices = getattr(distribution, "choices", None)
            wanted = space.get(name)
            if choices is not None and isinstance(wanted, list) and list(choices) != wanted:
                raise SearchSpaceError(
                    f"search_space[{name!r}] lists {wanted}, but the study in {url} "
                    f"searched {list(choices)}: optuna cannot change the choices of a "
                    "parameter within a study. Use the same list, or give another "
                    "output_dir/storage for a new study."
                )


def search(
    target: SearchTarget, *, n_trials: int, search_space, storage: str | None
) -> tuple[dict, pd.DataFrame | None]:
    """Run ``n_trials`` more trials on ``target``; returns (best setting, trial table).

    The best setting is ``{TrainingArguments field: value}`` of the trial with the highest
    validation macro-F1 over the whole study (earlier calls' trials included); the table is
    ``None`` on processes other than the first under ``torchrun``.
    """
    optuna = import_optional("optuna", feature="Hyperparameter search (n_trials=)")
    target.check_validation()
    space = hp_space(search_space)  # a bad space fails before the study is touched
    url = storage_url(target, storage)
    args = target.arguments(Path(target.output_dir) / SEARCH_DIR)
    name = target.study_name
    if args.process_index == 0:
        study = optuna.create_study(
            storage=url, study_name=name, direction="maximize", load_if_exists=True
        )
        _check_fingerprint(study, target, url)
        _check_choices(study, search_space, url)
    trainer = target.trainer(args)
    _seed_trials(trainer, space)
    start = _logging.info(f"    hyperparameter search: {n_trials} trials, study in {url}")
    # optuna logs every trial at INFO into notebooks; scgf's own lines say what matters
    shown = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _hyperparameter_search(trainer, optuna, space, n_trials, url, name)
    finally:
        optuna.logging.set_verbosity(shown)
    best, table, study = {}, None, None
    if args.process_index == 0:
        study = optuna.load_study(study_name=name, storage=url)
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


def stored_search(target: SearchTarget, *, storage: str | None) -> tuple[dict, pd.DataFrame] | None:
    """The best setting and trial table of a study already stored for ``target`` (checked to
    come from the same data and settings), without running trials; ``None`` when there is
    none: no ``storage`` given and no ``output_dir/search.db``."""
    if storage is None and not (Path(target.output_dir) / SEARCH_DB).is_file():
        return None
    optuna = import_optional("optuna", feature="Hyperparameter search (n_trials=)")
    url = storage_url(target, storage)
    try:
        study = optuna.load_study(study_name=target.study_name, storage=url)
    except KeyError:
        if storage is None:
            return None
        raise ValueError(
            f"storage={storage!r} holds no study {target.study_name!r} to take the best "
            "setting from; pass n_trials > 0 to search."
        ) from None
    _check_fingerprint(study, target, url)
    try:
        best = study.best_trial
    except ValueError:  # no trial finished
        return None
    _logging.info(
        f"    best trial {best.number} of the stored search ({len(study.trials)} trials, "
        f"{url}): eval macro-F1 {best.value:.4f} with {best.params}"
    )
    return dict(best.params), trials_table(study)


class _CellSearch:
    """The cell classifier's :class:`~scgf.tl._finetune._run.Job` as a search target."""

    study_name = STUDY_NAME

    def __init__(self, job):
        self.job = job
        self.output_dir = job.output_dir

    def check_validation(self) -> None:
        if not (self.job.split == 1).any():
            raise ValueError(
                NO_VALIDATION + "there is no validation split; give split_sizes with a "
                "validation fraction, or validation cells in split_key."
            )

    def fingerprint(self) -> dict:
        return self.job.fingerprint({"training_args": {}, "n_trials": None})

    def arguments(self, output_dir: Path):
        return self.job.arguments(output_dir, {"save_total_limit": 1})

    def trainer(self, args):
        return self.job.trainer(args, search=True)


def run_search(job, *, n_trials: int, search_space, storage: str | None):
    """The cell classifier's search: ``n_trials`` more trials on the job's train/validation
    split; returns (best setting, trial table)."""
    return search(_CellSearch(job), n_trials=n_trials, search_space=search_space, storage=storage)


def _broadcast(value, args):
    """Process 0's ``value`` on every process (under torchrun)."""
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _seed_trials(trainer, space: Callable) -> None:
    """Build each trial's model after seeding with the trial's own ``seed``.

    ``Trainer.train`` seeds from ``args.seed`` and calls ``model_init`` *before* it applies
    the trial's setting to ``args``, so with ``seed`` in the search space each trial's head
    would be drawn with the previous trial's seed, and training the best setting again would
    not repeat the best trial. The space is asked for the trial's values here (optuna returns
    a trial's earlier suggestion again), so the model is built as a plain training with that
    seed builds it.
    """
    from transformers import enable_full_determinism, set_seed
    from transformers.trainer_utils import number_of_arguments

    init = trainer.model_init
    takes_trial = number_of_arguments(init) == 1

    def model_init(trial=None):
        seed = space(trial).get("seed") if trial is not None else None
        if seed is not None:
            seeding = enable_full_determinism if trainer.args.full_determinism else set_seed
            seeding(int(seed))
        return init(trial) if takes_trial else init()

    trainer.model_init = model_init


def _hyperparameter_search(
    trainer, optuna, space, n_trials: int, url: str, study_name: str = STUDY_NAME
) -> None:
    """transformers' optuna search, maximising validation macro-F1, pruning bad trials.

    Under ``torchrun`` trials are not pruned: transformers reports to optuna on the first
    process only, so a trial pruned there would run on in the others and their collective
    calls would no longer match (the run hangs).
    """
    if trainer.args.world_size > 1:
        pruner = optuna.pruners.NopPruner()
    else:
        pruner = optuna.pruners.MedianPruner(n_warmup_steps=1)
    trainer.hyperparameter_search(
        hp_space=space,
        compute_objective=lambda metrics: metrics["eval_macro_f1"],
        n_trials=n_trials,
        direction="maximize",
        backend="optuna",
        storage=url,
        study_name=study_name,
        load_if_exists=True,
        pruner=pruner,
    )
