"""The registry of published Geneformer checkpoints and gene dictionaries.

Every file is pinned to a repository revision and its sha256 (``checkpoints.json``, the
published facts of the Hugging Face repository ``ctheodoris/Geneformer``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import pandas as pd

REPOSITORY = "ctheodoris/Geneformer"


@dataclass(frozen=True)
class RemoteFile:
    """One file of the model repository, pinned to a revision and a sha256."""

    path: str
    revision: str
    sha256: str
    size: int | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class VocabularySpec:
    """Where a published vocabulary's dictionaries live and how its models read tokens."""

    name: str
    files: dict[str, RemoteFile]
    context_size: int
    special_tokens: bool

    @property
    def version(self) -> str:
        return "V2" if self.special_tokens else "V1"


@dataclass(frozen=True)
class ModelEntry:
    """A named checkpoint: its files, its vocabulary and the names it was published under."""

    name: str
    folder: str
    revision: str
    files: tuple[RemoteFile, ...]
    vocabulary: str
    fine_tuned: bool = False
    aliases: tuple[str, ...] = field(default=())

    @property
    def weight_file(self) -> RemoteFile:
        """The weights to download: safetensors when published, else the pickle."""
        by_name = {f.name: f for f in self.files}
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if candidate in by_name:
                return by_name[candidate]
        raise KeyError(f"{self.name} lists no weight file")

    @property
    def inference_files(self) -> tuple[RemoteFile, ...]:
        """The files ``from_pretrained`` needs: the config and the weights."""
        by_name = {f.name: f for f in self.files}
        return (by_name["config.json"], self.weight_file)


# Models whose tokens come from the 30M-cell corpus dictionaries (V1).
_V1_MODELS = {
    "Geneformer-V1-10M",
    "gf-6L-30M-i2048",
    "gf-12L-30M-i2048",
    "Geneformer-V1-10M_CellClassifier_cardiomyopathies_220224",
}
_ALIASES = {"gf-12L-95M-i4096_CLcancer": ("gf-12L-95M-i4096-CLcancer",)}
_DICTIONARY_ROLES = {
    "token_dictionary": "token_dictionary",
    "gene_median": "gene_median_dictionary",
    "gene_names": "gene_name_id_dict",
    "gene_mapping": "ensembl_mapping_dict",
}

_custom_models: dict[str, ModelEntry] = {}


def _remote(record: dict) -> RemoteFile:
    return RemoteFile(
        path=record["path"],
        revision=record["revision"],
        sha256=record["sha256"],
        size=record.get("size"),
    )


@cache
def _manifest() -> dict:
    text = resources.files("scgf.models").joinpath("checkpoints.json").read_text()
    return json.loads(text)


@cache
def published_models() -> dict[str, ModelEntry]:
    """Every published checkpoint, keyed by its name."""
    entries = {}
    for name, record in _manifest()["checkpoints"].items():
        entries[name] = ModelEntry(
            name=name,
            folder=record["folder"],
            revision=record["revision"],
            files=tuple(_remote(f) for f in record["files"]),
            vocabulary="gc30M" if name in _V1_MODELS else "gc104M",
            fine_tuned=record["folder"].startswith("fine_tuned_models/"),
            aliases=_ALIASES.get(name, ()),
        )
    return entries


@cache
def published_vocabularies() -> dict[str, VocabularySpec]:
    """The two published vocabularies: ``gc104M`` (V2, also called gc95M) and ``gc30M`` (V1)."""
    files: dict[str, dict[str, RemoteFile]] = {"gc104M": {}, "gc30M": {}}
    for record in _manifest()["dictionaries"]:
        remote = _remote(record)
        vocab = "gc30M" if remote.name.endswith("_gc30M.pkl") else "gc104M"
        for role, stem in _DICTIONARY_ROLES.items():
            if remote.name.startswith(stem + "_"):
                files[vocab][role] = remote
    return {
        "gc104M": VocabularySpec("gc104M", files["gc104M"], context_size=4096, special_tokens=True),
        "gc30M": VocabularySpec("gc30M", files["gc30M"], context_size=2048, special_tokens=False),
    }


def all_models() -> dict[str, ModelEntry]:
    """Published and user-registered models together."""
    return {**published_models(), **_custom_models}


def lookup(name: str) -> ModelEntry | None:
    """Find a model by its current name, an earlier name or an alias; ``None`` if unknown."""
    models = all_models()
    if name in models:
        return models[name]
    for entry in models.values():
        if name in entry.aliases:
            return entry
    return None


def register(
    name: str,
    *,
    folder: str,
    revision: str,
    files: dict[str, str],
    vocabulary: str,
    fine_tuned: bool = False,
) -> ModelEntry:
    """Register a checkpoint served with the hub's URL layout (e.g. an institute mirror).

    Parameters
    ----------
    name
        The name to use for ``model=`` arguments.
    folder
        The checkpoint's folder inside the repository.
    revision
        The repository revision (branch or commit) to download from.
    files
        ``{file name inside folder: sha256 hex digest}``; must contain ``config.json`` and a
        ``model.safetensors`` or ``pytorch_model.bin``.
    vocabulary
        ``"gc104M"`` (V2) or ``"gc30M"`` (V1): the dictionaries the model was trained with.
    fine_tuned
        Whether the checkpoint is a fine-tuned classifier.

    Returns
    -------
    The new registry entry.
    """
    if vocabulary not in published_vocabularies():
        raise ValueError(
            f"Unknown vocabulary {vocabulary!r}; use one of {sorted(published_vocabularies())}."
        )
    if "config.json" not in files or not {"model.safetensors", "pytorch_model.bin"} & set(files):
        raise ValueError(
            f"Model {name!r} lists {sorted(files)}; it needs 'config.json' and a "
            "'model.safetensors' or 'pytorch_model.bin'."
        )
    entry = ModelEntry(
        name=name,
        folder=folder,
        revision=revision,
        files=tuple(
            RemoteFile(path=f"{folder}/{fname}", revision=revision, sha256=digest)
            for fname, digest in files.items()
        ),
        vocabulary=vocabulary,
        fine_tuned=fine_tuned,
    )
    _custom_models[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a model added with :func:`register`."""
    _custom_models.pop(name, None)


def list_models() -> pd.DataFrame:
    """Every checkpoint scgf can fetch, with its vocabulary and pinned revision.

    Returns
    -------
    One row per model, indexed by name, with columns ``aliases``, ``version`` (V1/V2),
    ``vocabulary``, ``context_size``, ``fine_tuned``, ``revision``, ``folder`` and
    ``weights_mb`` (download size of the weights).
    """
    vocabularies = published_vocabularies()
    rows = []
    for entry in all_models().values():
        vocab = vocabularies[entry.vocabulary]
        size = entry.weight_file.size
        rows.append(
            {
                "name": entry.name,
                "aliases": ", ".join(entry.aliases),
                "version": vocab.version,
                "vocabulary": entry.vocabulary,
                "context_size": vocab.context_size,
                "fine_tuned": entry.fine_tuned,
                "revision": entry.revision,
                "folder": entry.folder,
                "weights_mb": round(size / 2**20, 1) if size else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("name")
