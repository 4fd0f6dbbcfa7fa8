"""Download and verify registry files with pooch."""

from __future__ import annotations

import logging
from pathlib import Path

import pooch
import requests

from .._settings import settings
from ._registry import REPOSITORY, RemoteFile

logger = logging.getLogger("scgf")


class DownloadError(RuntimeError):
    """A file could not be downloaded and no verified copy is cached."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 differs from the pinned one; the bad bytes are not kept."""


def file_url(remote: RemoteFile, base_url: str | None = None) -> str:
    """The hub-layout URL of one file: ``{base}/{repo}/resolve/{revision}/{path}``."""
    base = (base_url or settings.base_url).rstrip("/")
    return f"{base}/{REPOSITORY}/resolve/{remote.revision}/{remote.path}"


def cached_path(remote: RemoteFile) -> Path:
    """Where a file lives in the cache; the layout mirrors the repository's."""
    return settings.cache_dir / remote.revision / remote.path


def fetch_file(remote: RemoteFile, *, progress: bool | None = None) -> Path:
    """Return a verified local copy of ``remote``, downloading it when needed.

    A cached file whose hash matches is used without any network access; a cached file whose
    hash differs is downloaded again. A download whose hash differs is discarded.

    Parameters
    ----------
    remote
        The registry file.
    progress
        Show a download progress bar; defaults to ``scgf.settings.progress``.

    Returns
    -------
    Path of the verified file.
    """
    target = cached_path(remote)
    url = file_url(remote)
    show = settings.progress if progress is None else progress
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{remote.sha256}",
            fname=target.name,
            path=target.parent,
            progressbar=show,
        )
    except ValueError as err:
        if "hash" not in str(err).lower():
            raise
        raise ChecksumError(
            f"The download of {remote.path} from {url} does not match its pinned sha256 "
            f"{remote.sha256}; the file was discarded. The server or mirror "
            f"({settings.base_url}) serves different bytes: check SCGF_BASE_URL or try again."
        ) from err
    except (requests.exceptions.RequestException, OSError) as err:
        raise DownloadError(
            f"Could not download {remote.path} from {url} ({type(err).__name__}: {err}) and no "
            f"verified copy is cached in {target.parent}. On a machine with internet access run "
            f"`scgf fetch NAME` (or scgf.models.fetch(NAME)) and copy the cache directory "
            f"{settings.cache_dir} here, set SCGF_CACHE_DIR to a pre-filled cache, or point "
            "SCGF_BASE_URL at a reachable mirror."
        ) from err
    return Path(path)
