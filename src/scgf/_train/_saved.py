"""The scgf metadata file next to a fine-tuned model's transformers files.

A fine-tuned model folder is a standard transformers folder (``config.json`` with
``id2label``/``label2id``, ``model.safetensors``) plus ``scgf.json``: what the model was trained
for and on (task, classes, base model, vocabulary, tokenization, metrics, training
arguments, LoRA settings), so that scgf's tools can use it and a person can read it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

METADATA_FILE = "scgf.json"

TASKS = ("cell_classification", "multitask_cell_classification", "gene_classification")


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN to None, paths/others to str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_metadata(folder: str | Path, metadata: dict) -> None:
    """Write ``metadata`` as ``folder/scgf.json``.

    ``scgf_version`` and ``created`` (ISO time, UTC) are filled in when missing; values are
    made JSON-safe (numpy to Python, non-finite floats to ``null``).

    Parameters
    ----------
    folder
        The model folder (created if missing).
    metadata
        Keys as documented in the contract: ``task``, ``tasks``, ``base_model``,
        ``vocabulary``, ``tokenization``, ``metrics``, ``training_arguments``, ``lora``.
    """
    from .. import __version__

    task = metadata.get("task")
    if task is not None and task not in TASKS:
        raise ValueError(f"metadata task={task!r}; use one of {', '.join(TASKS)}.")
    record = {
        "scgf_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **metadata,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(record), indent=2, sort_keys=False)
    # Write then rename, so a reader never sees half a file.
    tmp = folder / (METADATA_FILE + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(folder / METADATA_FILE)


def read_metadata(folder: str | Path) -> dict | None:
    """The ``scgf.json`` of a model folder, or ``None`` when it has none.

    Raises
    ------
    ValueError
        The file exists but is not valid JSON (names the file).
    """
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); the model folder's scgf metadata is damaged. "
            "Re-save the model with scgf.tl.finetune or remove the file."
        ) from err
