"""Package-wide settings: cache location, download mirror and progress bars."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pooch

HUB_BASE_URL = "https://huggingface.co"


def _default_cache_dir() -> Path:
    env = os.environ.get("SCGF_CACHE_DIR")
    return Path(env) if env else Path(pooch.os_cache("scgf"))


@dataclass
class ScgfSettings:
    """Settings shared by every scgf function.

    Attributes
    ----------
    cache_dir
        Where downloaded checkpoints and dictionaries are kept. Defaults to
        ``pooch.os_cache("scgf")``; the ``SCGF_CACHE_DIR`` environment variable overrides it.
        Set to ``None`` to go back to the environment/default value.
    base_url
        Base URL of the model hub. ``SCGF_BASE_URL`` replaces ``https://huggingface.co`` with a
        mirror that keeps the hub's URL layout
        (``{base}/ctheodoris/Geneformer/resolve/{revision}/{path}``).
    progress
        Show tqdm progress bars for downloads and long computations.
    n_jobs
        Threads for CPU work such as tokenization (defaults to the number of CPUs).
    """

    _cache_dir: Path | None = field(default=None, repr=False)
    _base_url: str | None = field(default=None, repr=False)
    progress: bool = True
    n_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir if self._cache_dir is not None else _default_cache_dir()

    @cache_dir.setter
    def cache_dir(self, value: str | os.PathLike | None) -> None:
        self._cache_dir = None if value is None else Path(value)

    @property
    def base_url(self) -> str:
        if self._base_url is not None:
            return self._base_url
        return os.environ.get("SCGF_BASE_URL", HUB_BASE_URL).rstrip("/")

    @base_url.setter
    def base_url(self, value: str | None) -> None:
        self._base_url = None if value is None else value.rstrip("/")


settings = ScgfSettings()
