"""Download and verify registry files with pooch."""

from __future__ import annotations

from pathlib import Path

from .._settings import settings
from ._registry import (
    REPOSITORY,
    ModelEntry,
    RemoteFile,
    all_models,
    lookup,
    published_vocabularies,
)


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
    import pooch
    import requests

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


class UnknownModelError(ValueError):
    """A ``model=`` argument is neither a registered name nor an existing folder."""


def unknown_model(name: str) -> UnknownModelError:
    """The error for a ``model=`` that is neither a known name nor an existing folder."""
    known = ", ".join(all_models())
    return UnknownModelError(
        f"{name!r} is neither a known Geneformer checkpoint nor an existing folder. "
        f"Known names: {known}. See scgf.models.list_models()."
    )


def require_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``, or :class:`UnknownModelError`."""
    entry = lookup(name)
    if entry is None:
        raise unknown_model(name)
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
    entry = require_entry(name)
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
