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
    own columns kept, a checkpoint per epoch (the last two kept) so that a run resumes, and
    pinned memory only when there is a GPU to copy to.

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
    import torch
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
        # pinned host memory only helps copies to a GPU; on CPU torch warns at every loader
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return TrainingArguments(**{**defaults, **overrides})
