"""scgf's default ``TrainingArguments``."""

from __future__ import annotations

from pathlib import Path

from .._optional import import_optional
from .._settings import settings


def training_arguments(output_dir: str | Path, **overrides):
    """``TrainingArguments`` with scgf's defaults; any argument can be overridden.

    Defaults that differ from transformers': batches grouped by cell length (most of a
    random batch of cells is padding otherwise), no external experiment trackers
    (``report_to="none"``), progress bars following ``scgf.settings.progress``, the dataset's
    own columns kept, and a checkpoint per epoch (the last two kept) so that a run resumes.

    Parameters
    ----------
    output_dir
        Where checkpoints and the final model go.
    **overrides
        Any ``transformers.TrainingArguments`` field.

    Returns
    -------
    The ``TrainingArguments``.
    """
    from transformers import TrainingArguments

    import_optional("accelerate", feature="Training (transformers.Trainer)")
    defaults = dict(
        output_dir=str(output_dir),
        train_sampling_strategy="group_by_length",
        report_to="none",
        disable_tqdm=not settings.progress,
        remove_unused_columns=False,
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="epoch",
    )
    return TrainingArguments(**{**defaults, **overrides})
