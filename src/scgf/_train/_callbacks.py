"""Trainer callbacks and helpers: log lines through scgf's logging; resuming."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from .. import _logging


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


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-*`` folder in ``output_dir`` to resume from, else ``None``."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output_dir)
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
