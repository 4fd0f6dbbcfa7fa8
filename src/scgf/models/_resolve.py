"""Resolve ``model=`` arguments (registry name, folder, vocabulary) to files and vocabularies."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pandas as pd
import pooch

from ..vocab import Vocabulary, find_dictionary_files
from ._fetch import fetch_file
from ._registry import ModelEntry, all_models, lookup, published_vocabularies

ModelLike = str | os.PathLike | Vocabulary

DEFAULT_MODEL = "Geneformer-V2-104M"


class UnknownModelError(ValueError):
    """A ``model=`` argument is neither a registered name nor an existing folder."""


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


def _unknown(name: str) -> UnknownModelError:
    known = ", ".join(all_models())
    return UnknownModelError(
        f"{name!r} is neither a known Geneformer checkpoint nor an existing folder. "
        f"Known names: {known}. See scgf.models.list_models()."
    )


def _require_entry(name: str) -> ModelEntry:
    entry = lookup(name)
    if entry is None:
        raise _unknown(name)
    return entry


def fetch(name: str, *, progress: bool | None = None) -> Path:
    """Download a checkpoint's config and weights (once) and return its local folder.

    Files are verified against their pinned sha256 and cached in ``scgf.settings.cache_dir``;
    later calls use the cache without network access. The folder can be passed to
    ``transformers.BertForMaskedLM.from_pretrained``.

    Parameters
    ----------
    name
        A registry name or alias, e.g. ``"Geneformer-V2-104M"`` or ``"gf-12L-95M-i4096"``.
    progress
        Show download progress bars; defaults to ``scgf.settings.progress``.

    Returns
    -------
    The local checkpoint folder.
    """
    entry = _require_entry(name)
    paths = [fetch_file(remote, progress=progress) for remote in entry.inference_files]
    return paths[0].parent


def fetch_vocabulary(name: str = "gc104M", *, progress: bool | None = None) -> dict[str, Path]:
    """Download a published vocabulary's four dictionaries and return their local paths.

    Parameters
    ----------
    name
        ``"gc104M"`` (V2; ``"gc95M"`` is the same files) or ``"gc30M"`` (V1).
    progress
        Show download progress bars; defaults to ``scgf.settings.progress``.

    Returns
    -------
    ``{"token_dictionary": path, "gene_median": path, "gene_names": path,
    "gene_mapping": path}``.
    """
    name = "gc104M" if name == "gc95M" else name
    specs = published_vocabularies()
    if name not in specs:
        raise UnknownModelError(f"Unknown vocabulary {name!r}; use 'gc104M' (V2) or 'gc30M' (V1).")
    return {
        role: fetch_file(remote, progress=progress) for role, remote in specs[name].files.items()
    }


@cache
def _published_vocabulary(name: str) -> Vocabulary:
    spec = published_vocabularies()[name]
    return Vocabulary.from_files(
        **fetch_vocabulary(name),
        context_size=spec.context_size,
        special_tokens=spec.special_tokens,
        name=name,
    )


_VOCABULARY_NAMES = {
    "gc104M": "gc104M",
    "gc95M": "gc104M",
    "V2": "gc104M",
    "gc30M": "gc30M",
    "V1": "gc30M",
}


def _vocabulary_from_config(directory: Path) -> Vocabulary:
    config_path = directory / "config.json"
    if not config_path.exists():
        raise UnknownModelError(
            f"{directory} has neither Geneformer dictionary files (token_dictionary*.pkl, "
            "gene_median_dictionary*.pkl) nor a config.json to identify its vocabulary."
        )
    config = json.loads(config_path.read_text())
    shape = (config.get("vocab_size"), config.get("max_position_embeddings"))
    for name, spec in published_vocabularies().items():
        if shape == (_PUBLISHED_SIZES[name], spec.context_size):
            return _published_vocabulary(name)
    raise UnknownModelError(
        f"{config_path} has vocab_size={shape[0]} and max_position_embeddings={shape[1]}, "
        "which match no published vocabulary (V1 gc30M: 25426/2048, V2 gc104M: 20275/4096). "
        "Put the model's token_dictionary*.pkl and gene_median_dictionary*.pkl in the folder, "
        "or pass a scgf.vocab.Vocabulary built with Vocabulary.from_files(...)."
    )


def _published_name(files: dict[str, Path]) -> str | None:
    """The published vocabulary whose token and median dictionaries these files are."""
    digests = {
        role: pooch.file_hash(str(files[role]), alg="sha256")
        for role in ("token_dictionary", "gene_median")
    }
    for name, spec in published_vocabularies().items():
        if all(spec.files[role].sha256 == digest for role, digest in digests.items()):
            return name
    return None


# Token-dictionary sizes of the published vocabularies (special tokens included).
_PUBLISHED_SIZES = {"gc104M": 20275, "gc30M": 25426}


def get_vocabulary(model: ModelLike = DEFAULT_MODEL) -> Vocabulary:
    """The vocabulary that ``model`` reads.

    Parameters
    ----------
    model
        A registry name (its published dictionaries are fetched, not its weights), a
        vocabulary name (``"gc104M"``/``"V2"``, ``"gc30M"``/``"V1"``), a local checkpoint folder
        (its own dictionary files, else the published vocabulary its ``config.json`` shape
        matches) or a :class:`~scgf.vocab.Vocabulary`.

    Returns
    -------
    The vocabulary.
    """
    if isinstance(model, Vocabulary):
        return model
    if isinstance(model, str) and model in _VOCABULARY_NAMES:
        return _published_vocabulary(_VOCABULARY_NAMES[model])
    if isinstance(model, str) and lookup(model) is not None:
        return _published_vocabulary(lookup(model).vocabulary)
    path = Path(model)
    if path.is_dir():
        files = find_dictionary_files(path)
        if files is None:
            return _vocabulary_from_config(path)
        published = _published_name(files)
        if published is None:
            return Vocabulary.from_directory(path)
        spec = published_vocabularies()[published]  # the published files, read locally
        return Vocabulary.from_files(
            **files,
            context_size=spec.context_size,
            special_tokens=spec.special_tokens,
            name=published,
        )
    raise _unknown(str(model))
