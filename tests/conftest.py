"""Shared fixtures: the real dictionaries and data in ../shared, and a loopback model hub."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

import scgf
from scgf.models import published_vocabularies

SHARED = Path(os.environ.get("SCGF_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DICTS = SHARED / "reference" / "geneformer_dicts"
DATA = SHARED / "data"

# The shared copies keep the gc95M names; the hub serves the same bytes as gc104M.
_DICT_FILES = {
    "token_dictionary_gc104M.pkl": "token_dictionary_gc95M.pkl",
    "gene_median_dictionary_gc104M.pkl": "gene_median_dictionary_gc95M.pkl",
    "gene_name_id_dict_gc104M.pkl": "gene_name_id_dict_gc95M.pkl",
    "ensembl_mapping_dict_gc104M.pkl": "ensembl_mapping_dict_gc95M.pkl",
}

needs_dicts = pytest.mark.skipif(
    not DICTS.is_dir(), reason=f"real Geneformer dictionaries not found in {DICTS}"
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real count data not found in {DATA}")


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu (needs CUDA)")
    parser.addoption(
        "--internet", action="store_true", help="run tests marked internet (needs the hub)"
    )


def pytest_collection_modifyitems(config, items):
    """``gpu`` and ``internet`` tests run only when asked for, and say why they are skipped."""
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


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    if not DICTS.is_dir():
        pytest.skip(f"real Geneformer dictionaries not found in {DICTS}")
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
    return sorted(DATA.glob("*.h5ad")) if DATA.is_dir() else []
