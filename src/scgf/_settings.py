"""Package-wide settings: cache location, download mirror, progress bars and verbosity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import _logging

HUB_BASE_URL = "https://huggingface.co"


def _default_cache_dir() -> Path:
    env = os.environ.get("SCGF_CACHE_DIR")
    if env:
        return Path(env)
    import pooch  # pulls in requests; only needed once a download location is asked for

    return Path(pooch.os_cache("scgf"))


def _interval_from_env(default: float = 120.0) -> float:
    """``SCGF_CHECKPOINT_INTERVAL`` in seconds; a value that is no number is reported, not
    fatal (it is read when scgf is imported)."""
    text = os.environ.get("SCGF_CHECKPOINT_INTERVAL")
    if text is None:
        return default
    try:
        return max(0.0, float(text))
    except ValueError:
        import warnings

        warnings.warn(
            f"SCGF_CHECKPOINT_INTERVAL={text!r} is not a number of seconds; using {default:g}.",
            UserWarning,
            stacklevel=2,
        )
        return default


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
    checkpoint_interval
        Seconds between saves of a resumable run's progress (embeddings of a backed file),
        besides the save after every chunk of cells. Defaults to 120, or the
        ``SCGF_CHECKPOINT_INTERVAL`` environment variable.
    verbosity
        How much scgf logs to ``stderr``, on scanpy's scale: ``0``/``"error"``,
        ``1``/``"warning"``, ``2``/``"info"`` (default: "computing …" and timed "finished"
        lines), ``3``/``"hint"``, ``4``/``"debug"``. scgf logs through the ``"scgf"`` logger
        with its own handler and never through the root logger.
    """

    _cache_dir: Path | None = field(default=None, repr=False)
    _base_url: str | None = field(default=None, repr=False)
    progress: bool = True
    n_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    checkpoint_interval: float = field(default_factory=lambda: _interval_from_env())
    _verbosity: str = field(default="info", repr=False)

    def __post_init__(self) -> None:
        self.verbosity = self._verbosity

    @property
    def verbosity(self) -> str:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        level = _logging.verbosity_level(value)
        self._verbosity = next(k for k, v in _logging.VERBOSITY_LEVELS.items() if v == level)
        _logging.logger.setLevel(level)

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
