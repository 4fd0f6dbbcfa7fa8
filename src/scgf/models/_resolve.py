"""``scgf.models.resolve``: every kind of ``model=`` argument to one record.

A ``model=`` may be a registry name or alias, a local checkpoint folder, or a transformers
model already in memory. Every tool asks :func:`resolve` what it is: where its files are,
which vocabulary it reads, which revision and hashes identify it, and what task (and labels)
it was trained for. Nothing else re-derives these facts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..vocab import Vocabulary
from ._fetch import fetch, unknown_model
from ._registry import ModelEntry, lookup
from ._vocabularies import (
    VOCABULARY_NAMES,
    published_vocabulary,
    vocabulary_of_config,
    vocabulary_of_folder,
)

ModelLike = str | os.PathLike | Vocabulary

DEFAULT_MODEL = "Geneformer-V2-104M"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# transformers architecture -> the task scgf calls it
TASKS = {
    "BertForMaskedLM": "masked_lm",
    "BertForPreTraining": "masked_lm",
    "BertForSequenceClassification": "cell_classification",
    "BertForTokenClassification": "gene_classification",
    "BertModel": "encoder",
    "MultiTaskClassifier": "multitask_cell_classification",
}


@dataclass(frozen=True, eq=False)
class ModelRecord:
    """What scgf knows about one ``model=`` argument.

    Attributes
    ----------
    name
        Registry name, folder path, or the loaded model's ``name_or_path``.
    kind
        ``"registry"``, ``"folder"``, ``"adapter"`` (a LoRA adapter folder) or ``"loaded"``.
    vocabulary
        The vocabulary the model reads.
    folder
        The local checkpoint folder (``None`` for a loaded model, or when the weights were not
        asked for); an adapter folder's own folder.
    revision
        Repository revision of a registry model.
    file_hashes
        ``{file name: sha256}``: pinned hashes of a registry model, the weight file's hash of
        a folder.
    config
        The model's ``config.json`` (``None`` before a registry model is fetched).
    task
        ``"masked_lm"`` (pretrained), ``"cell_classification"``, ``"gene_classification"``,
        ``"multitask_cell_classification"``, ``"encoder"`` (a bare ``BertModel``) or ``None``
        when unknown. An adapter folder has the task of the model it fine-tuned.
    labels
        Class names of a fine-tuned classifier, in logit order (``None`` for a multi-task
        model: see :attr:`tasks`).
    model
        The transformers model itself, when one was passed.
    entry
        The registry entry of a registry model.
    base
        An adapter folder's base model (its record).
    """

    name: str
    kind: str
    vocabulary: Vocabulary
    folder: Path | None = None
    revision: str | None = None
    file_hashes: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    task: str | None = None
    labels: tuple[str, ...] | None = None
    model: Any = None
    entry: ModelEntry | None = None
    base: ModelRecord | None = None

    @property
    def adapter(self) -> Path | None:
        """The adapter folder (``adapter_config.json``) applied to :attr:`base`, if any."""
        return self.folder if self.kind == "adapter" else None

    @property
    def tasks(self) -> dict[str, tuple[str, ...]] | None:
        """{task: class names} of a multi-task classifier (``None`` for other models)."""
        tasks = (self.config or {}).get("scgf_tasks")
        return {str(t): tuple(map(str, c)) for t, c in tasks.items()} if tasks else None

    @property
    def weight_file(self) -> Path | None:
        """The local weight file, if the folder has one."""
        return None if self.folder is None else _weight_file(self.folder)

    @property
    def sha256(self) -> str | None:
        """sha256 of the weights (``None`` for a loaded model)."""
        for name in WEIGHT_FILES + ADAPTER_WEIGHT_FILES:
            if name in self.file_hashes:
                return self.file_hashes[name]
        return None

    def describe(self) -> dict:
        """Parameters that identify the model in ``adata.uns``."""
        info = {"model": self.name, "revision": self.revision, "sha256": self.sha256}
        if self.base is not None:
            base = self.base.describe()
            info.update({f"base_{key}": value for key, value in base.items()})
        return {k: v for k, v in info.items() if v is not None}


def resolve(
    model: Any = DEFAULT_MODEL,
    *,
    weights: bool = True,
    vocabulary: Vocabulary | None = None,
) -> ModelRecord:
    """Resolve a ``model=`` argument to one :class:`ModelRecord`.

    Parameters
    ----------
    model
        A registry name or alias (``"Geneformer-V2-104M"``, ``"gf-12L-95M-i4096"``), a local
        checkpoint folder (a transformers folder with ``config.json`` and weights, optionally
        Geneformer dictionary pickles), a fine-tuned model folder, a LoRA adapter folder
        (``adapter_config.json``; its base model is resolved from ``scgf.json``'s
        ``base_model``, else the adapter config's ``base_model_name_or_path``), or a loaded
        transformers model.
    weights
        Download (registry) and hash (folder) the weights. ``False`` resolves only what the
        vocabulary needs, e.g. for tokenizing.
    vocabulary
        Use this vocabulary instead of the model's own.

    Returns
    -------
    The record.
    """
    if _is_transformers_model(model):
        return _resolve_loaded(model, vocabulary)
    if isinstance(model, Vocabulary):
        raise TypeError("A Vocabulary is not a model; pass a model name or folder as model=.")
    entry = lookup(model) if isinstance(model, str) else None
    if entry is not None:
        return _resolve_registry(entry, weights, vocabulary)
    folder = Path(model)
    if (folder / ADAPTER_CONFIG).is_file():
        from ._adapters import resolve_adapter

        return resolve_adapter(folder, weights, vocabulary)
    if folder.is_dir():
        return _resolve_folder(folder, weights, vocabulary)
    raise unknown_model(str(model))


def _is_transformers_model(model: Any) -> bool:
    # Checked without importing transformers, so that resolving a name stays cheap.
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _task_and_labels(config: dict | None) -> tuple[str | None, tuple[str, ...] | None]:
    if not config:
        return None, None
    architectures = config.get("architectures") or []
    task = TASKS.get(architectures[0]) if architectures else None
    labels = None
    if task in ("cell_classification", "gene_classification") and config.get("id2label"):
        id2label = config["id2label"]
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    return task, labels


def _read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def _weight_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return folder / name
    return None


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too: a rewritten checkpoint is hashed again.
    import pooch

    return pooch.file_hash(path, alg="sha256")


def _resolve_registry(entry: ModelEntry, weights: bool, vocabulary) -> ModelRecord:
    folder = fetch(entry.name) if weights else None
    config = _read_config(folder) if folder is not None else None
    task, labels = _task_and_labels(config)
    return ModelRecord(
        name=entry.name,
        kind="registry",
        vocabulary=vocabulary or published_vocabulary(entry.vocabulary),
        folder=folder,
        revision=entry.revision,
        file_hashes={f.name: f.sha256 for f in entry.files},
        config=config,
        task=task,
        labels=labels,
        entry=entry,
    )


def _resolve_folder(folder: Path, weights: bool, vocabulary) -> ModelRecord:
    config = _read_config(folder)
    hashes = {}
    if weights:
        weight_file = _weight_file(folder)
        if weight_file is None:
            raise FileNotFoundError(
                f"{folder} has no {' or '.join(WEIGHT_FILES)}: it is not a checkpoint folder."
            )
        stat = weight_file.stat()
        hashes[weight_file.name] = _file_sha256(str(weight_file), stat.st_size, stat.st_mtime_ns)
    task, labels = _task_and_labels(config)
    return ModelRecord(
        name=str(folder),
        kind="folder",
        vocabulary=vocabulary or vocabulary_of_folder(folder, config),
        folder=folder,
        file_hashes=hashes,
        config=config,
        task=task,
        labels=labels,
    )


def _resolve_loaded(model, vocabulary) -> ModelRecord:
    config = model.config.to_dict()
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    task, labels = _task_and_labels({**config, "architectures": [type(model).__name__]})
    return ModelRecord(
        name=name,
        kind="loaded",
        vocabulary=vocabulary or vocabulary_of_config(config, f"The {type(model).__name__}"),
        config=config,
        task=task,
        labels=labels,
        model=model,
    )


def get_vocabulary(model: ModelLike = DEFAULT_MODEL) -> Vocabulary:
    """The vocabulary that ``model`` reads.

    Parameters
    ----------
    model
        A registry name (its published dictionaries are fetched, not its weights), a
        vocabulary name (``"gc104M"``/``"V2"``, ``"gc30M"``/``"V1"``), a local checkpoint folder
        (its own dictionary files, else the published vocabulary its ``config.json`` shape
        matches), a loaded transformers model or a :class:`~scgf.vocab.Vocabulary`.

    Returns
    -------
    The vocabulary.
    """
    if isinstance(model, Vocabulary):
        return model
    if isinstance(model, str) and model in VOCABULARY_NAMES:
        return published_vocabulary(VOCABULARY_NAMES[model])
    return resolve(model, weights=False).vocabulary
