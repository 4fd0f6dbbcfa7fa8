"""Geneformer checkpoints: the registry, pooch downloads, vocabularies and ``resolve``."""

from ._fetch import (
    ChecksumError,
    DownloadError,
    UnknownModelError,
    cached_path,
    fetch,
    fetch_file,
    fetch_vocabulary,
    file_url,
)
from ._registry import (
    ModelEntry,
    RemoteFile,
    VocabularySpec,
    list_models,
    lookup,
    published_vocabularies,
    register,
    unregister,
)
from ._resolve import DEFAULT_MODEL, ModelRecord, get_vocabulary, resolve

__all__ = [
    "DEFAULT_MODEL",
    "ChecksumError",
    "DownloadError",
    "ModelEntry",
    "ModelRecord",
    "RemoteFile",
    "UnknownModelError",
    "VocabularySpec",
    "cached_path",
    "fetch",
    "fetch_file",
    "fetch_vocabulary",
    "file_url",
    "get_vocabulary",
    "list_models",
    "lookup",
    "published_vocabularies",
    "register",
    "resolve",
    "unregister",
]
