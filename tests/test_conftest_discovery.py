"""Where the test suite finds the real dictionaries and data (``tests/conftest.py``).

Shared folder first, then scgf's cache, then a download through scgf's own fetch code; the
hub is a loopback server, never the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

import scgf
from scgf.models import cached_path, published_vocabularies
from tests.conftest import (
    _DICT_FILES,
    DATA_FOUND,
    DICTS,
    SHARED_DATASETS,
    data_files_named,
    find_data,
    find_dictionaries,
    needs_dicts,
    scgf_settings,
    sha256,
)

pytestmark = needs_dicts

REMOTES = [r for spec in published_vocabularies().values() for r in spec.files.values()]
SHARED_NAMES = sorted(_DICT_FILES.get(r.name, r.name) for r in REMOTES)


def shared_folder(folder: Path) -> Path:
    """A shared dictionaries folder as ../shared has it."""
    folder.mkdir(parents=True)
    for name in SHARED_NAMES:
        (folder / name).write_bytes((DICTS / name).read_bytes())
    return folder


def filled_cache(cache: Path) -> Path:
    """A cache as ``scgf fetch gc104M gc30M`` leaves it."""
    with scgf_settings(cache, "http://127.0.0.1:9"):
        for remote in REMOTES:
            target = cached_path(remote)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((DICTS / _DICT_FILES.get(remote.name, remote.name)).read_bytes())
    return cache


def assert_real_dictionaries(folder: Path):
    assert sorted(p.name for p in folder.iterdir()) == SHARED_NAMES
    for name in SHARED_NAMES:
        assert sha256(folder / name) == sha256(DICTS / name)


def test_shared_folder_comes_first(tmp_path, hub):
    shared = shared_folder(tmp_path / "shared")
    n_requests = len(hub.requests)
    found = find_dictionaries(shared, filled_cache(tmp_path / "cache"), hub.url, tmp_path / "copy")
    assert (found.path, found.source) == (shared, "shared folder")
    assert len(hub.requests) == n_requests and not (tmp_path / "copy").exists()


def test_cache_comes_second(tmp_path, hub):
    n_requests = len(hub.requests)
    found = find_dictionaries(
        tmp_path / "no_shared", filled_cache(tmp_path / "cache"), hub.url, tmp_path / "copy"
    )
    assert (found.path, found.source) == (tmp_path / "copy", "scgf cache")
    assert_real_dictionaries(found.path)
    assert len(hub.requests) == n_requests


def test_download_comes_last_and_fills_the_cache(tmp_path, hub):
    n_requests = len(hub.requests)
    cache = tmp_path / "cache"
    found = find_dictionaries(tmp_path / "no_shared", cache, hub.url, tmp_path / "copy")
    assert found.path == tmp_path / "copy" and found.source == f"downloaded from {hub.url}"
    assert_real_dictionaries(found.path)
    assert len(hub.requests) == n_requests + len(REMOTES)
    # The next session finds them in the cache.
    again = find_dictionaries(tmp_path / "no_shared", cache, hub.url, tmp_path / "copy2")
    assert again.source == "scgf cache" and len(hub.requests) == n_requests + len(REMOTES)


def test_a_damaged_cached_file_is_downloaded_again(tmp_path, hub):
    cache = filled_cache(tmp_path / "cache")
    remote = REMOTES[0]
    with scgf_settings(cache, hub.url):
        cached_path(remote).write_bytes(b"not a pickle")
    n_requests = len(hub.requests)
    found = find_dictionaries(tmp_path / "no_shared", cache, hub.url, tmp_path / "copy")
    assert found.source.startswith("downloaded")
    assert_real_dictionaries(found.path)
    assert [r.rsplit("/", 1)[-1] for r in hub.requests[n_requests:]] == [remote.name]


def test_nothing_found_says_how_to_get_them(tmp_path, hub):
    empty_hub = type(hub)(tmp_path / "empty_hub")  # answers 404 to everything
    try:
        cache = tmp_path / "cache"
        found = find_dictionaries(tmp_path / "no_shared", cache, empty_hub.url, tmp_path / "c")
        assert found.path is None and len(empty_hub.requests) == 1  # stops at the first file
        for part in (str(tmp_path / "no_shared"), str(cache), empty_hub.url, "scgf fetch"):
            assert part in found.reason
        assert "gc104M gc30M" in found.reason and "SCGF_SHARED_DIR" in found.reason
        offline = find_dictionaries(
            tmp_path / "no_shared", cache, empty_hub.url, tmp_path / "c", download=False
        )
        assert offline.path is None and "SCGF_TEST_DOWNLOAD=0" in offline.reason
        assert len(empty_hub.requests) == 1
    finally:
        empty_hub.stop()


def test_settings_are_left_as_they_were(tmp_path, hub):
    before = scgf.settings._cache_dir, scgf.settings._base_url, scgf.settings.progress
    find_dictionaries(tmp_path / "no_shared", tmp_path / "cache", hub.url, tmp_path / "copy")
    assert (scgf.settings._cache_dir, scgf.settings._base_url, scgf.settings.progress) == before


def test_data_come_from_the_shared_folder(tmp_path):
    shared = tmp_path / "data"
    shared.mkdir()
    found = find_data(shared, DICTS, tmp_path / "rebuilt")
    assert (found.path, found.source) == (shared, "shared folder")


def test_without_data_or_dictionaries_the_reason_says_they_cannot_be_downloaded(tmp_path):
    found = find_data(tmp_path / "no_data", None, tmp_path / "rebuilt")
    assert found.path is None
    assert "cannot be downloaded from anywhere" in found.reason and "scgf fetch" in found.reason


def test_without_data_pbmc68k_is_rebuilt_as_shared(tmp_path):
    found = find_data(tmp_path / "no_data", DICTS, tmp_path / "rebuilt")
    assert found.path == tmp_path / "rebuilt"
    assert [p.name for p in found.path.iterdir()] == ["pbmc68k_reduced_counts.h5ad"]
    assert "cannot be downloaded from anywhere" in found.reason
    if DATA_FOUND.source != "shared folder":
        pytest.skip("no shared pbmc68k_reduced_counts.h5ad to compare the rebuilt file with")
    rebuilt = ad.read_h5ad(found.path / "pbmc68k_reduced_counts.h5ad")
    shared = ad.read_h5ad(DATA_FOUND.path / "pbmc68k_reduced_counts.h5ad")
    assert (rebuilt.X != shared.X).nnz == 0 and rebuilt.X.dtype == shared.X.dtype
    pd.testing.assert_frame_equal(rebuilt.obs, shared.obs)
    pd.testing.assert_frame_equal(rebuilt.var, shared.var)


def test_tests_are_matched_to_the_data_files_their_body_names():
    @pytest.mark.parametrize("name", ["pbmc_ifnb_kang2018_2000", "tcell_wu2020_200"])
    def uses(name):
        return "pbmc_sorted_zheng2017_3100.h5ad", name

    assert data_files_named(uses, {"name": "tcell_wu2020_200"}) == {
        "pbmc_sorted_zheng2017_3100",
        "tcell_wu2020_200",
    }
    assert data_files_named(uses, {}) == {"pbmc_sorted_zheng2017_3100"}
    assert data_files_named(None, {"path": Path("x/immune_celltypist_559.h5ad")}) == {
        "immune_celltypist_559"
    }
    assert set(SHARED_DATASETS) >= {"pbmc68k_reduced_counts", "pbmc_chr21_10x_v3"}


@pytest.mark.slow
def test_a_clone_without_shared_folder_downloads_the_dictionaries(tmp_path, hub):
    """The whole wiring, in a fresh pytest session with an empty cache and no shared folder."""
    env = {
        **os.environ,
        "SCGF_SHARED_DIR": str(tmp_path / "no_shared"),
        "SCGF_CACHE_DIR": str(tmp_path / "cache"),
        "SCGF_BASE_URL": hub.url,
    }
    env.pop("SCGF_TEST_DOWNLOAD", None)
    tests = [
        "tests/vocab/test_vocabulary.py::test_sizes_match_the_published_dictionaries",
        "tests/get/test_tokens.py",  # reads the rebuilt pbmc68k_reduced_counts.h5ad
    ]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *tests],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and " skipped" not in run.stdout, run.stdout + run.stderr
    assert f"(downloaded from {hub.url})" in run.stdout
    assert "(only pbmc68k_reduced_counts.h5ad, rebuilt)" in run.stdout
    for remote in REMOTES:
        with scgf_settings(tmp_path / "cache", hub.url):
            assert sha256(cached_path(remote)) == remote.sha256
