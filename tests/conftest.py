"""Shared fixtures: the real dictionaries and data, and a loopback model hub.

The real Geneformer dictionaries are looked for, in this order:

1. in the shared folder beside the repository (``../shared/reference/geneformer_dicts``, or
   ``$SCGF_SHARED_DIR/reference/geneformer_dicts``);
2. in scgf's download cache (``scgf.settings.cache_dir``), where ``scgf fetch gc104M gc30M``
   puts them;
3. else they are downloaded into that cache from the hub (or ``SCGF_BASE_URL``) with
   :func:`scgf.models.fetch_vocabulary`, unless ``SCGF_TEST_DOWNLOAD=0``.

``DICTS`` is a folder with the shared copies' file names (``*_gc95M.pkl``, ``*_gc30M.pkl``)
whichever way they were found. The real count data (``DATA``) cannot be downloaded from
anywhere: without the shared folder, only ``pbmc68k_reduced_counts.h5ad`` is rebuilt (from
scanpy's bundled copy and the dictionaries), and tests that name another shared data file are
skipped, saying so.
"""

from __future__ import annotations

import ast
import atexit
import hashlib
import http.server
import inspect
import os
import shutil
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import scgf
from scgf.models import published_vocabularies

SHARED = Path(os.environ.get("SCGF_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
SHARED_DICTS = SHARED / "reference" / "geneformer_dicts"
SHARED_DATA = SHARED / "data"

# The shared copies keep the gc95M names; the hub serves the same bytes as gc104M.
_DICT_FILES = {
    "token_dictionary_gc104M.pkl": "token_dictionary_gc95M.pkl",
    "gene_median_dictionary_gc104M.pkl": "gene_median_dictionary_gc95M.pkl",
    "gene_name_id_dict_gc104M.pkl": "gene_name_id_dict_gc95M.pkl",
    "ensembl_mapping_dict_gc104M.pkl": "ensembl_mapping_dict_gc95M.pkl",
}

# The files of ../shared/data (its README says where each comes from).
SHARED_DATASETS = (
    "immune_celltypist_559",
    "pbmc68k_reduced_counts",
    "pbmc_chr21_10x_v3",
    "pbmc_ifnb_kang2018_2000",
    "pbmc_sorted_zheng2017_3100",
    "pbmc_sorted_zheng2017_scminer_3500",
    "tcell_wu2020_200",
)
GET_DICTS = (
    "run `scgf fetch gc104M gc30M` once on a machine with internet access (then copy its cache "
    "here or point SCGF_CACHE_DIR at it), or put the shared folder beside the repository or "
    "set SCGF_SHARED_DIR to it"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Found:
    """Where test inputs were found: ``path`` (``None`` if nowhere), how, or why not."""

    path: Path | None
    source: str = ""
    reason: str = ""


@contextmanager
def scgf_settings(cache_dir: Path, base_url: str) -> Iterator[None]:
    """Use ``cache_dir`` and ``base_url`` (and no progress bars) inside the block."""
    settings = scgf.settings
    previous = settings._cache_dir, settings._base_url, settings.progress
    settings.cache_dir, settings.base_url, settings.progress = cache_dir, base_url, False
    try:
        yield
    finally:
        settings._cache_dir, settings._base_url, settings.progress = previous


def _copy_as_shared(paths: dict[str, Path], folder: Path) -> Path:
    """Copy published dictionary files into ``folder`` under the shared copies' names."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        shutil.copyfile(path, folder / _DICT_FILES.get(name, name))
    return folder


def find_dictionaries(
    shared: Path, cache_dir: Path, base_url: str, folder: Path, *, download: bool = True
) -> Found:
    """Find the real dictionaries: the shared folder, else the cache, else a download.

    Parameters
    ----------
    shared
        The shared dictionaries folder (``*_gc95M.pkl`` and ``*_gc30M.pkl`` names).
    cache_dir, base_url
        scgf's download cache and hub.
    folder
        Where cached or downloaded files are copied under the shared names.
    download
        Whether to try the hub when the cache lacks a file.

    Returns
    -------
    The folder and its source, or ``path=None`` and a skip reason saying how to get them.
    """
    remotes = [r for spec in published_vocabularies().values() for r in spec.files.values()]
    if all((shared / _DICT_FILES.get(r.name, r.name)).is_file() for r in remotes):
        return Found(shared, "shared folder")
    from scgf.models import cached_path, fetch_vocabulary

    with scgf_settings(cache_dir, base_url):
        cached = {r.name: cached_path(r) for r in remotes}
        if all(cached[r.name].is_file() and sha256(cached[r.name]) == r.sha256 for r in remotes):
            return Found(_copy_as_shared(cached, folder), "scgf cache")
        if not download:
            failed = "downloading is turned off (SCGF_TEST_DOWNLOAD=0)"
        else:
            try:
                paths = {
                    path.name: path
                    for name in published_vocabularies()
                    for path in fetch_vocabulary(name, progress=False).values()
                }
                return Found(_copy_as_shared(paths, folder), f"downloaded from {base_url}")
            except Exception as err:  # no network, a bad mirror, …: say so and skip
                cause = err.__cause__ or err
                failed = f"downloading them from {base_url} failed ({type(cause).__name__})"
    return Found(
        None,
        reason=(
            f"real Geneformer dictionaries not found: not in the shared folder {shared}, not "
            f"in the scgf cache {cache_dir}, and {failed}. To get them, {GET_DICTS}"
        ),
    )


def rebuild_pbmc68k(target: Path, dicts: Path) -> Path:
    """Write ``pbmc68k_reduced_counts.h5ad`` as the shared folder has it, without it.

    The counts come from :func:`scgf.datasets.pbmc68k_reduced` (scanpy's bundled copy); the
    ``var`` columns from an exact symbol lookup in the V2 dictionaries, as the shared file's
    README describes.
    """
    import pickle

    import numpy as np
    import scanpy as sc

    adata = scgf.datasets.pbmc68k_reduced()
    names = pickle.loads((dicts / "gene_name_id_dict_gc95M.pkl").read_bytes())
    tokens = pickle.loads((dicts / "token_dictionary_gc95M.pkl").read_bytes())
    adata.var_names.name = None
    symbols = adata.var_names.to_series()
    adata.var["gene_symbols"] = symbols.to_numpy()
    adata.var["ensembl_id"] = symbols.map(names).to_numpy()
    adata.var["in_geneformer_vocab"] = adata.var["ensembl_id"].isin(tokens.keys()).to_numpy()
    obs = adata.obs
    obs.insert(3, "percent_mito", sc.datasets.pbmc68k_reduced().obs["percent_mito"])
    obs["n_genes"] = np.diff(adata.X.indptr).astype(np.int32)
    target.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(target)
    return target


def find_data(shared: Path, dicts: Path | None, folder: Path) -> Found:
    """The shared count data, else a folder with ``pbmc68k_reduced_counts.h5ad`` rebuilt.

    ``reason`` says why data are missing (all of them, or all but the rebuilt file).
    """
    not_downloadable = (
        f"the real count data are not in {shared} and cannot be downloaded from anywhere (they "
        "were assembled for this project; see the README of the shared data folder): put the "
        "shared folder beside the repository or set SCGF_SHARED_DIR to it"
    )
    if shared.is_dir():
        return Found(shared, "shared folder")
    if dicts is None:
        return Found(
            None,
            reason=f"{not_downloadable} (without it, pbmc68k_reduced_counts.h5ad alone is rebuilt "
            "once the real dictionaries are found: `scgf fetch gc104M gc30M`)",
        )
    try:
        rebuild_pbmc68k(folder / "pbmc68k_reduced_counts.h5ad", dicts)
    except Exception as err:  # never let a fallback break the whole test session
        return Found(None, reason=f"{not_downloadable}; rebuilding pbmc68k failed ({err!r})")
    return Found(folder, "only pbmc68k_reduced_counts.h5ad, rebuilt", not_downloadable)


def data_files_named(test_function, params: dict) -> set[str]:
    """The shared data files (stems) a test names in its body or its parameters."""
    try:  # the body only: a parametrize decorator lists every case's files
        (node,) = ast.parse(textwrap.dedent(inspect.getsource(test_function))).body
        text = "\n".join(ast.unparse(statement) for statement in node.body)
    except (OSError, TypeError, ValueError, SyntaxError):
        text = ""
    text += " ".join(str(v) for v in params.values())
    return {stem for stem in SHARED_DATASETS if stem in text}


# Made only when the shared folder is incomplete; removed when the session ends.
_WORK = Path(tempfile.gettempdir()) / f"scgf-tests-{os.getpid()}"
atexit.register(shutil.rmtree, _WORK, True)
DICTS_FOUND = find_dictionaries(
    SHARED_DICTS,
    scgf.settings.cache_dir,
    scgf.settings.base_url,
    _WORK / "geneformer_dicts",
    download=os.environ.get("SCGF_TEST_DOWNLOAD", "1") != "0",
)
DATA_FOUND = find_data(SHARED_DATA, DICTS_FOUND.path, _WORK / "data")
DICTS = DICTS_FOUND.path or SHARED_DICTS
DATA = DATA_FOUND.path or SHARED_DATA

needs_dicts = pytest.mark.skipif(DICTS_FOUND.path is None, reason=DICTS_FOUND.reason)
needs_data = pytest.mark.skipif(DATA_FOUND.path is None, reason=DATA_FOUND.reason)


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu (needs CUDA)")
    parser.addoption(
        "--internet", action="store_true", help="run tests marked internet (needs the hub)"
    )


def pytest_report_header(config):
    """Say where the real dictionaries and data come from in this run."""
    return [
        f"real {what}: {found.path} ({found.source})" if found.path else f"real {what}: not found"
        for what, found in (("dictionaries", DICTS_FOUND), ("count data", DATA_FOUND))
    ]


def pytest_collection_modifyitems(config, items):
    """``gpu`` and ``internet`` tests run only when asked for, and say why they are skipped;
    tests that name a shared data file absent here are skipped."""
    if DATA_FOUND.path is not None and DATA_FOUND.source != "shared folder":
        for item in items:
            function = getattr(item, "function", None)
            callspec = getattr(item, "callspec", None)
            named = data_files_named(function, callspec.params if callspec else {})
            missing = sorted(s for s in named if not (DATA / f"{s}.h5ad").exists())
            if missing:
                files = ", ".join(f"{s}.h5ad" for s in missing)
                item.add_marker(pytest.mark.skip(reason=f"needs {files}: {DATA_FOUND.reason}"))
    for marker, reason in (
        ("gpu", "needs a CUDA GPU: run with pytest --gpu on a GPU machine"),
        ("internet", "needs the Hugging Face hub: run with pytest --internet"),
    ):
        if config.getoption(f"--{marker}"):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


class Hub:
    """A directory served over loopback HTTP with the Hugging Face URL layout."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                hub.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def path_for(self, revision: str, path: str) -> Path:
        return self.root / "ctheodoris" / "Geneformer" / "resolve" / revision / path

    def put(self, revision: str, path: str, source: Path) -> Path:
        target = self.path_for(revision, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A loopback hub serving the real published dictionaries at their pinned paths."""
    if DICTS_FOUND.path is None:
        pytest.skip(DICTS_FOUND.reason)
    server = Hub(tmp_path_factory.mktemp("hub"))
    for spec in published_vocabularies().values():
        for remote in spec.files.values():
            local = DICTS / _DICT_FILES.get(remote.name, remote.name)
            server.put(remote.revision, remote.path, local)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hub_settings(hub, tmp_path_factory):
    """Point scgf at the loopback hub with a fresh cache, for the whole session."""
    previous = (scgf.settings._base_url, scgf.settings._cache_dir, scgf.settings.progress)
    scgf.settings.base_url = hub.url
    scgf.settings.cache_dir = tmp_path_factory.mktemp("cache")
    scgf.settings.progress = False
    yield scgf.settings
    scgf.settings._base_url, scgf.settings._cache_dir, scgf.settings.progress = previous


@pytest.fixture(scope="session")
def vocab_v2(hub_settings):
    """The real V2 (gc104M) vocabulary, downloaded from the loopback hub."""
    return scgf.models.get_vocabulary("Geneformer-V2-104M")


@pytest.fixture(scope="session")
def vocab_v1(hub_settings):
    """The real V1 (gc30M) vocabulary, downloaded from the loopback hub."""
    return scgf.models.get_vocabulary("Geneformer-V1-10M")


@pytest.fixture(autouse=True)
def _quiet_progress():
    previous = scgf.settings.progress, scgf.settings.verbosity
    scgf.settings.progress = False
    yield
    scgf.settings.progress, scgf.settings.verbosity = previous


def real_datasets() -> list[Path]:
    return sorted(DATA.glob("*.h5ad")) if DATA_FOUND.path is not None else []
