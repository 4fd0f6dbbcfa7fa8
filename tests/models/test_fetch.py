"""Fetching through the real pooch path, from a loopback server with the hub's URL layout."""

from __future__ import annotations

import socket

import pytest
from transformers import BertForMaskedLM

import scgf
from scgf import models
from tests._tiny import make_tiny_checkpoint
from tests.conftest import DICTS, Hub, sha256


@pytest.fixture
def private_cache(tmp_path, hub_settings):
    previous = scgf.settings._cache_dir
    scgf.settings.cache_dir = tmp_path / "cache"
    yield scgf.settings.cache_dir
    scgf.settings.cache_dir = previous


@pytest.fixture
def tiny_hub(tmp_path):
    """A private hub with a tiny V2 checkpoint registered as 'tiny-V2'."""
    server = Hub(tmp_path / "hub")
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "V2")
    digests = {}
    for name in ("config.json", "model.safetensors"):
        server.put("abc123", f"tiny-V2/{name}", checkpoint / name)
        digests[name] = sha256(checkpoint / name)
    models.register(
        "tiny-V2", folder="tiny-V2", revision="abc123", files=digests, vocabulary="gc104M"
    )
    previous = scgf.settings._base_url
    scgf.settings.base_url = server.url
    yield server, checkpoint, digests
    scgf.settings.base_url = previous
    models.unregister("tiny-V2")
    server.stop()


def test_real_dictionaries_download_and_verify(private_cache, hub):
    paths = models.fetch_vocabulary("gc104M")
    for role, path in paths.items():
        assert path.is_relative_to(private_cache)
        assert sha256(path) == models.published_vocabularies()["gc104M"].files[role].sha256
    assert (
        paths["token_dictionary"].read_bytes()
        == (DICTS / "token_dictionary_gc95M.pkl").read_bytes()
    )
    # gc95M is the same vocabulary under its earlier name.
    assert models.fetch_vocabulary("gc95M") == paths


def test_fetch_checkpoint_and_load(private_cache, tiny_hub):
    server, checkpoint, _ = tiny_hub
    folder = models.fetch("tiny-V2")
    assert folder == private_cache / "abc123" / "tiny-V2"
    model = BertForMaskedLM.from_pretrained(folder)
    reference = BertForMaskedLM.from_pretrained(checkpoint)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert a.equal(b), name
    assert any(r.endswith("/resolve/abc123/tiny-V2/model.safetensors") for r in server.requests)


def test_cached_files_need_no_network(private_cache, tiny_hub):
    server, _, _ = tiny_hub
    models.fetch("tiny-V2")
    server.stop()  # offline from here on
    assert (models.fetch("tiny-V2") / "config.json").exists()


def test_offline_without_cache_says_how_to_prefetch(private_cache, tiny_hub):
    server, _, _ = tiny_hub
    server.stop()
    with pytest.raises(models.DownloadError, match="scgf fetch") as info:
        models.fetch("tiny-V2")
    assert "SCGF_CACHE_DIR" in str(info.value)


def test_wrong_hash_is_an_error_and_keeps_nothing(private_cache, tiny_hub):
    _, _, digests = tiny_hub
    models.register(
        "tiny-bad",
        folder="tiny-V2",
        revision="abc123",
        files={**digests, "model.safetensors": "0" * 64},
        vocabulary="gc104M",
    )
    try:
        with pytest.raises(models.ChecksumError, match="does not match its pinned sha256"):
            models.fetch("tiny-bad")
        assert not (private_cache / "abc123" / "tiny-V2" / "model.safetensors").exists()
    finally:
        models.unregister("tiny-bad")


def test_corrupted_download_is_rejected(private_cache, tiny_hub):
    server, _, _ = tiny_hub
    served = server.path_for("abc123", "tiny-V2/model.safetensors")
    served.write_bytes(served.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(models.ChecksumError):
        models.fetch("tiny-V2")


def test_corrupted_cache_is_downloaded_again(private_cache, tiny_hub):
    _, _, digests = tiny_hub
    cached = models.fetch("tiny-V2") / "model.safetensors"
    cached.write_bytes(b"garbage")
    models.fetch("tiny-V2")
    assert sha256(cached) == digests["model.safetensors"]


def test_missing_file_on_server(private_cache, tiny_hub):
    server, _, _ = tiny_hub
    server.path_for("abc123", "tiny-V2/config.json").unlink()
    with pytest.raises(models.DownloadError, match="tiny-V2/config.json"):
        models.fetch("tiny-V2")


def test_unknown_model_lists_known_names():
    with pytest.raises(models.UnknownModelError, match="Geneformer-V2-104M"):
        models.fetch("Geneformer-V3")


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("SCGF_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.setenv("SCGF_BASE_URL", "http://mirror.invalid/hf/")
    settings = scgf._settings.ScgfSettings()
    assert settings.cache_dir == tmp_path / "envcache"
    entry = models.lookup("Geneformer-V2-104M")
    assert settings.base_url == "http://mirror.invalid/hf"
    assert models.file_url(entry.weight_file, settings.base_url) == (
        "http://mirror.invalid/hf/ctheodoris/Geneformer/resolve/"
        "05fcbeb8a27d49e0a7a4349152202ee2c1cbfd28/Geneformer-V2-104M/model.safetensors"
    )


def test_default_url_is_the_hub(monkeypatch):
    monkeypatch.delenv("SCGF_BASE_URL", raising=False)
    assert scgf._settings.ScgfSettings().base_url == "https://huggingface.co"


def test_resolve_registry_name_fetches_and_records_hashes(vocab_v2, private_cache, tiny_hub):
    record = models.resolve("tiny-V2")
    entry = models.lookup("tiny-V2")
    assert record.kind == "registry" and record.name == "tiny-V2"
    assert record.revision == entry.revision and record.sha256 == entry.weight_file.sha256
    assert (record.folder / "config.json").exists() and record.task == "masked_lm"
    assert record.describe() == {
        "model": "tiny-V2",
        "revision": entry.revision,
        "sha256": entry.weight_file.sha256,
    }
    light = models.resolve("tiny-V2", weights=False)
    assert light.folder is None and light.vocabulary is record.vocabulary


# --- offline: what the errors say ------------------------------------------------------------


@pytest.fixture
def offline(private_cache):
    """No hub: the base URL points at a closed port on 127.0.0.1, the cache is empty."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    previous = scgf.settings._base_url
    scgf.settings.base_url = f"http://127.0.0.1:{port}"
    yield private_cache
    scgf.settings._base_url = previous


def test_offline_model_error_says_a_local_folder_works(offline, tiny_hub):
    server, _, _ = tiny_hub
    server.stop()
    with pytest.raises(models.DownloadError) as info:
        models.fetch("tiny-V2")
    message = str(info.value)
    assert "`scgf fetch tiny-V2`" in message and "NAME" not in message
    assert "folder" in message and "model=" in message and "--model" in message


def test_offline_dictionary_error_gives_the_vocabulary_hint(offline):
    with pytest.raises(models.DownloadError) as info:
        models.fetch_vocabulary("gc30M")
    message = str(info.value)
    assert "scgf fetch --vocabulary-only" in message and "`scgf fetch gc30M`" in message
    assert "NAME" not in message and "token_dictionary" in message


def test_offline_corrupt_cache_is_named_and_removed(private_cache, tiny_hub):
    server, _, _ = tiny_hub
    cached = models.fetch("tiny-V2") / "model.safetensors"
    cached.write_bytes(b"garbage")
    server.stop()  # offline from here on
    with pytest.raises(models.DownloadError) as info:
        models.fetch("tiny-V2")
    message = str(info.value)
    assert f"cached copy {cached} is corrupt" in message and "removed" in message
    assert "`scgf fetch tiny-V2`" in message
    assert not cached.exists()


@pytest.mark.parametrize("call", [models.fetch, models.resolve])
def test_unknown_model_suggests_close_names(call):
    with pytest.raises(models.UnknownModelError, match=r"Did you mean 'Geneformer-V2-104M'"):
        call("Geneformer-V2-14M")
    with pytest.raises(models.UnknownModelError, match=r"Did you mean 'gf-12L-95M-i4096'"):
        call("gf-12L-95M-i4069")
