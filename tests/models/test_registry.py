"""The registry knows every published checkpoint, pinned, and ties each to its vocabulary."""

from __future__ import annotations

import json

import pytest

from scgf import models
from tests.conftest import SHARED

BASE_MODELS = [
    "Geneformer-V1-10M",
    "Geneformer-V2-104M",
    "Geneformer-V2-104M_CLcancer",
    "Geneformer-V2-316M",
    "gf-6L-30M-i2048",
    "gf-12L-30M-i2048",
    "gf-12L-95M-i4096",
    "gf-12L-95M-i4096_CLcancer",
    "gf-20L-95M-i4096",
]
FINE_TUNED = [
    "Geneformer-V1-10M_CellClassifier_cardiomyopathies_220224",
    "gf-12L-95M-i4096_MTLCellClassifier_CELLxGENE_240522",
]


def test_every_published_checkpoint_is_listed():
    table = models.list_models()
    assert set(BASE_MODELS + FINE_TUNED) <= set(table.index)
    assert table.loc[FINE_TUNED, "fine_tuned"].all()
    assert not table.loc[BASE_MODELS, "fine_tuned"].any()


@pytest.mark.parametrize("name", BASE_MODELS + FINE_TUNED)
def test_files_are_pinned_to_revision_and_sha256(name):
    entry = models.lookup(name)
    assert len(entry.revision) == 40
    for remote in entry.files:
        assert remote.revision == entry.revision
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
    assert entry.inference_files[0].name == "config.json"


def test_vocabulary_ties():
    table = models.list_models()
    v1 = {"Geneformer-V1-10M", "gf-6L-30M-i2048", "gf-12L-30M-i2048", FINE_TUNED[0]}
    for name in BASE_MODELS + FINE_TUNED:
        expected = ("V1", "gc30M", 2048) if name in v1 else ("V2", "gc104M", 4096)
        assert tuple(table.loc[name, ["version", "vocabulary", "context_size"]]) == expected


def test_seed_and_alias_names():
    assert models.lookup("gf-12L-95M-i4096-CLcancer").name == "gf-12L-95M-i4096_CLcancer"
    assert models.lookup("gf-20L-95M-i4096").revision.startswith("31bf641d")
    assert models.lookup("Geneformer-V2-316M").revision.startswith("05fcbeb8")
    assert models.lookup("no-such-model") is None


def test_weights_prefer_safetensors():
    assert models.lookup("Geneformer-V1-10M").weight_file.name == "model.safetensors"
    assert models.lookup("gf-12L-30M-i2048").weight_file.name == "pytorch_model.bin"
    v2 = models.lookup("Geneformer-V2-104M").weight_file
    assert v2.sha256 == "fff5cba29ddd8792991fa77b4872246fbe548a178cebda3775cdc72b67780e7f"
    assert v2.size == 417_571_156


def test_dictionaries_are_pinned():
    spec = models.published_vocabularies()
    assert spec["gc104M"].files["token_dictionary"].path == "geneformer/token_dictionary_gc104M.pkl"
    assert (
        spec["gc30M"].files["gene_median"].sha256
        == "b3b589bb5ec75040d05fc44dd6bf0184cf87f3c362cf158d196a6ed3b7fe5f39"
    )
    assert set(spec["gc30M"].files) == {
        "token_dictionary",
        "gene_median",
        "gene_names",
        "gene_mapping",
    }


@pytest.mark.skipif(
    not (SHARED / "reference/checkpoints/manifest.json").exists(), reason="shared manifest absent"
)
def test_registry_matches_the_published_manifest():
    manifest = json.loads((SHARED / "reference/checkpoints/manifest.json").read_text())
    for name, record in manifest["checkpoints"].items():
        entry = models.lookup(name)
        assert {f.path: f.sha256 for f in entry.files} == {
            f["path"]: f["sha256"] for f in record["files"]
        }


def test_register_validates_files():
    with pytest.raises(ValueError, match="needs 'config.json'"):
        models.register(
            "x", folder="x", revision="main", files={"a.bin": "0" * 64}, vocabulary="gc104M"
        )
    with pytest.raises(ValueError, match="Unknown vocabulary"):
        models.register("x", folder="x", revision="main", files={}, vocabulary="gc1B")
