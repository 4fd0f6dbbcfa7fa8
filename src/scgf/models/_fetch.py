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
    hash differs is downloaded again, and removed when that download fails. A download whose
    hash differs is discarded.

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
            f"{remote.sha256}; the file was discarded.{_drop_corrupt(target, remote)} The "
            f"server or mirror ({settings.base_url}) serves different bytes: check "
            "SCGF_BASE_URL or try again."
        ) from err
    except (requests.exceptions.RequestException, OSError) as err:
        raise DownloadError(
            f"Could not download {remote.path} from {url} ({type(err).__name__}: {err}) and no "
            f"verified copy is cached in {target.parent}.{_drop_corrupt(target, remote)} "
            + _offline_help(remote)
        ) from err
    return Path(path)


def _drop_corrupt(target: Path, remote: RemoteFile) -> str:
    """Remove a cached copy whose hash differs from the pinned one, and say so.

    pooch keeps such a copy when the download that should replace it fails; left in place,
    it would be found (and rejected) again on every call without anyone being told why.
    """
    import pooch

    if not target.is_file():
        return ""
    digest = pooch.file_hash(str(target), alg="sha256")
    if digest == remote.sha256:
        return ""
    corrupt = (
        f" The cached copy {target} is corrupt (sha256 {digest[:12]}…, pinned "
        f"{remote.sha256[:12]}…: an interrupted download or a modified file)"
    )
    try:
        target.unlink()
    except OSError as err:
        return f"{corrupt} and could not be removed ({err}): delete it."
    return f"{corrupt}; it was removed."


def _owner(remote: RemoteFile) -> tuple[str, ModelEntry | str | None]:
    """``("vocabulary", name)`` or ``("model", entry)``: what a registry file belongs to."""
    for name, spec in published_vocabularies().items():
        if remote in spec.files.values():
            return "vocabulary", name
    for entry in all_models().values():
        if remote in entry.files:
            return "model", entry
    return "model", None


def _offline_help(remote: RemoteFile) -> str:
    """How to get ``remote`` without network access: pre-fetch it, or use local files."""
    kind, owner = _owner(remote)
    cache = (
        f"and copy the cache directory {settings.cache_dir} here (or point SCGF_CACHE_DIR at "
        "a copy)"
    )
    mirror = "or point SCGF_BASE_URL at a reachable mirror."
    if kind == "vocabulary":
        return (
            f"To get a good copy, on a machine with internet access run `scgf fetch {owner}` "
            "(the dictionaries alone; `scgf fetch --vocabulary-only MODEL` fetches a model's) "
            f"{cache}; or pass a local checkpoint folder that holds the model's dictionaries "
            "(token_dictionary*.pkl, gene_median_dictionary*.pkl) as model= (--model on the "
            f"command line); {mirror}"
        )
    if isinstance(owner, ModelEntry):
        fetch = f"`scgf fetch {owner.name}` (or scgf.models.fetch({owner.name!r}))"
        where = f", e.g. a copy of {owner.folder}/ from {REPOSITORY}"
    else:
        fetch, where = "`scgf fetch MODEL`", ""
    return (
        f"To get a good copy, on a machine with internet access run {fetch} {cache}; or pass a "
        f"local checkpoint folder (config.json and model.safetensors or pytorch_model.bin"
        f"{where}) as model= (--model on the command line); {mirror}"
    )


class UnknownModelError(ValueError):
    """A ``model=`` argument is neither a registered name nor an existing folder."""


def close_names(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The candidates a mistyped ``name`` most likely meant, best first.

    Case is ignored; a candidate that ``name`` begins comes first (a name cut short), then
    difflib's closest matches, keeping only those about as close as the best one.
    """
    import difflib

    by_lower = {c.lower(): c for c in reversed(candidates)}
    query = name.lower()
    if query in by_lower:
        return [by_lower[query]]
    found = [c for c in by_lower if c.startswith(query)] if len(query) >= 4 else []
    scored = sorted(
        ((difflib.SequenceMatcher(None, query, c).ratio(), c) for c in by_lower),
        reverse=True,
    )
    if scored and scored[0][0] >= 0.6:
        found += [c for score, c in scored if score >= scored[0][0] - 0.05 and c not in found]
    return [by_lower[c] for c in found[:n]]


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = [repr(c) for c in close_names(name, candidates)]
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" Did you mean {listed}?"


def unknown_model(name: str, *, vocabularies: bool = False) -> UnknownModelError:
    """The error for a ``model=`` that is neither a known name nor an existing folder.

    Parameters
    ----------
    name
        The name given.
    vocabularies
        Whether vocabulary names were also accepted (``scgf fetch``), rather than folders.
    """
    from ._vocabularies import VOCABULARY_NAMES

    models = list(all_models())
    names = models + [alias for entry in all_models().values() for alias in entry.aliases]
    if vocabularies:
        return UnknownModelError(
            f"{name!r} is not a known Geneformer checkpoint."
            f"{_did_you_mean(name, names + list(VOCABULARY_NAMES))} Known checkpoints: "
            f"{', '.join(models)}; dictionaries alone: gc104M (V2), gc30M (V1). "
            "See `scgf models`."
        )
    if Path(name).is_file():
        return UnknownModelError(
            f"{name!r} is a file; pass the checkpoint folder that holds it (config.json and "
            "the weights) or a registered name, e.g. 'Geneformer-V2-104M'."
        )
    return UnknownModelError(
        f"{name!r} is neither a known Geneformer checkpoint nor an existing folder."
        f"{_did_you_mean(name, names)} Known names: {', '.join(models)}. "
        "See scgf.models.list_models()."
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
        raise UnknownModelError(
            f"Unknown vocabulary {name!r}.{_did_you_mean(name, [*specs, 'gc95M'])} Use 'gc104M' "
            "(V2) or 'gc30M' (V1); scgf.models.lookup(MODEL).vocabulary names a model's."
        )
    return {
        role: fetch_file(remote, progress=progress) for role, remote in specs[name].files.items()
    }
