"""Resolving a LoRA adapter folder: its base model, and the fine-tuned model it describes.

An adapter folder (written by :func:`scgf._train._lora.save_adapter`) holds peft's
``adapter_config.json`` and adapter weights, the ``config.json`` of the fine-tuned model
(classes, tasks) and scgf's ``scgf.json`` naming the base model as the user gave it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..vocab import find_dictionary_files
from ._vocabularies import vocabulary_of_folder

# peft task types whose model has a head the base checkpoint lacks.
_HEAD_TASK_TYPES = ("SEQ_CLS", "TOKEN_CLS")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); save the adapter again.") from err


def base_model_name(folder: Path, adapter_config: dict) -> str:
    """The base model of an adapter folder: ``scgf.json``'s ``base_model``, else peft's
    ``base_model_name_or_path``."""
    metadata_file = folder / "scgf.json"
    metadata = _read_json(metadata_file) if metadata_file.is_file() else {}
    name = metadata.get("base_model") or adapter_config.get("base_model_name_or_path")
    if not name:
        raise ValueError(
            f"The adapter folder {folder} does not name its base model (no 'base_model' in "
            "scgf.json, no 'base_model_name_or_path' in adapter_config.json). Add "
            '{"base_model": "<registry name or folder>"} to its scgf.json.'
        )
    return str(name)


def resolve_adapter(folder: Path, weights: bool, vocabulary):
    """The :class:`~scgf.models.ModelRecord` of an adapter folder (``kind="adapter"``)."""
    from ._resolve import (
        ADAPTER_CONFIG,
        ADAPTER_WEIGHT_FILES,
        ModelRecord,
        _file_sha256,
        _read_config,
        _task_and_labels,
        resolve,
    )

    adapter_config = _read_json(folder / ADAPTER_CONFIG)
    name = base_model_name(folder, adapter_config)
    try:
        base = resolve(name, weights=weights, vocabulary=vocabulary)
    except Exception as err:
        err.add_note(f"(resolving {name!r}, the base model of the adapter folder {folder})")
        raise
    if base.kind == "adapter":
        raise ValueError(
            f"The adapter folder {folder} names another adapter folder ({name}) as its base "
            "model; merge that one first or name its base model."
        )
    config = _read_config(folder)
    if config is None:
        if adapter_config.get("task_type") in _HEAD_TASK_TYPES:
            raise ValueError(
                f"The adapter folder {folder} has no config.json, so the classes of its "
                f"{adapter_config['task_type']} head are unknown; save it with "
                "scgf._train.save_adapter (it writes the fine-tuned model's config)."
            )
        config = base.config
    hashes = {}
    if weights:
        found = [folder / f for f in ADAPTER_WEIGHT_FILES if (folder / f).is_file()]
        if not found:
            raise FileNotFoundError(
                f"The adapter folder {folder} has no {' or '.join(ADAPTER_WEIGHT_FILES)}."
            )
        stat = found[0].stat()
        hashes[found[0].name] = _file_sha256(str(found[0]), stat.st_size, stat.st_mtime_ns)
    if vocabulary is None and find_dictionary_files(folder) is not None:
        vocabulary = vocabulary_of_folder(folder, config)
    task, labels = _task_and_labels(config)
    return ModelRecord(
        name=str(folder),
        kind="adapter",
        vocabulary=vocabulary or base.vocabulary,
        folder=folder,
        file_hashes=hashes,
        config=config,
        task=task,
        labels=labels,
        base=base,
    )
