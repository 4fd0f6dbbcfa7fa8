"""Geneformer checkpoints: the registry, pooch downloads and vocabularies."""

from ._fetch import ChecksumError, DownloadError, cached_path, fetch_file, file_url
from ._registry import (
    ModelEntry,
    RemoteFile,
    VocabularySpec,
    lookup,
    published_vocabularies,
    register,
    unregister,
)
from ._resolve import (
    DEFAULT_MODEL,
    UnknownModelError,
    fetch,
    fetch_vocabulary,
    get_vocabulary,
    list_models,
)

__all__ = [
    "DEFAULT_MODEL",
    "ChecksumError",
    "DownloadError",
    "ModelEntry",
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
    "unregister",
]
