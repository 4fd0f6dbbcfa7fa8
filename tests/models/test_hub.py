"""Against the real Hugging Face hub (``pytest --internet``): the pinned hashes still hold."""

from __future__ import annotations

import pytest

import scgf
from scgf import models

pytestmark = pytest.mark.internet


@pytest.fixture
def real_hub(tmp_path):
    previous = scgf.settings._base_url, scgf.settings._cache_dir
    scgf.settings.base_url = None  # SCGF_BASE_URL or the hub
    scgf.settings.cache_dir = tmp_path
    yield
    scgf.settings._base_url, scgf.settings._cache_dir = previous


def test_published_v1_model_downloads_verifies_and_resolves(real_hub):
    record = models.resolve("Geneformer-V1-10M")
    assert record.task == "masked_lm" and record.vocabulary.name == "gc30M"
    assert record.config["num_hidden_layers"] == 6 and record.config["hidden_size"] == 256
    assert record.weight_file is not None and record.weight_file.stat().st_size > 1e7


def test_published_v2_dictionaries_download_and_verify(real_hub):
    paths = models.fetch_vocabulary("gc104M")
    assert set(paths) == {"token_dictionary", "gene_median", "gene_names", "gene_mapping"}
