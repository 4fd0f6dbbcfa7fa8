"""Trainer callbacks and helpers: log lines through scgf's logging; resuming."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from .. import _logging
from .._resume import as_text, check_same

FINGERPRINT_FILE = "fingerprint.json"


class LogCallback(TrainerCallback):
    """Writes the Trainer's logged metrics (loss, learning rate, evaluation) as scgf info
    lines, on the main process only, so they show in notebooks at ``settings.verbosity``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()
        )
        _logging.info(f"    epoch {state.epoch or 0:.2f}, step {state.global_step}: {values}")


def last_checkpoint(
    output_dir: str | Path, fingerprint: dict | None = None, *, restart: bool = False
) -> str | None:
    """The newest ``checkpoint-*`` folder in ``output_dir`` to resume from, else ``None``.

    With ``fingerprint`` (what the training is computed from: cells, tokens, labels, model,
    parameters), ``output_dir/fingerprint.json`` is written on the first run and checked on
    later ones, as for every resumable store (:mod:`scgf._resume`): checkpoints of another
    run are refused, naming what differs, or with ``restart`` ignored (training starts over
    and the fingerprint is replaced).
    """
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output_dir)
    if fingerprint is not None:
        saved = folder / FINGERPRINT_FILE
        if saved.exists() and not restart:
            check_same(
                saved.read_text(),
                fingerprint,
                str(folder),
                "train with the same data, model and parameters to resume, pass another "
                "output_dir, or restart=True to start over.",
            )
        else:
            folder.mkdir(parents=True, exist_ok=True)
            saved.write_text(as_text(fingerprint))
            if restart:
                return None
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
