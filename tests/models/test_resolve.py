"""A local folder works wherever a model name does."""

from __future__ import annotations

import json
import shutil

import pytest

from scgf import models
from scgf.vocab import Vocabulary
from tests._tiny import make_tiny_checkpoint
from tests.conftest import DICTS, needs_dicts

pytestmark = needs_dicts


def test_registry_name_gives_its_vocabulary(vocab_v1, vocab_v2):
    assert models.get_vocabulary("gf-12L-95M-i4096") is vocab_v2
    assert models.get_vocabulary("gf-6L-30M-i2048") is vocab_v1
    assert models.get_vocabulary("V1") is vocab_v1
    assert (vocab_v2.name, vocab_v2.context_size, vocab_v2.special_tokens) == ("gc104M", 4096, True)
    assert (vocab_v1.name, vocab_v1.context_size, vocab_v1.special_tokens) == ("gc30M", 2048, False)


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_folder_without_dictionaries_uses_config_shape(tmp_path, version, vocab_v1, vocab_v2):
    folder = make_tiny_checkpoint(tmp_path / "ckpt", version)
    expected = vocab_v1 if version == "V1" else vocab_v2
    assert models.get_vocabulary(folder) is expected
    assert models.get_vocabulary(str(folder)) is expected


def test_folder_with_dictionaries_uses_them(tmp_path, hub_settings):
    folder = make_tiny_checkpoint(tmp_path / "ckpt", "V1")
    shutil.copy(DICTS / "token_dictionary_gc30M.pkl", folder)
    shutil.copy(DICTS / "gene_median_dictionary_gc30M.pkl", folder)
    vocab = models.get_vocabulary(folder)
    assert vocab.name == "gc30M"  # recognised by the files' sha256
    assert vocab.n_genes == 25424 and not vocab.special_tokens and vocab.context_size == 2048
    with open(folder / "token_dictionary_gc30M.pkl", "ab") as handle:
        handle.write(b"\n")  # no longer the published file
    assert models.get_vocabulary(folder).name == "custom:ckpt"


def test_folder_with_published_dictionaries_is_the_published_vocabulary(tmp_path, vocab_v2):
    folder = make_tiny_checkpoint(tmp_path / "ckpt", "V2")
    shutil.copy(DICTS / "token_dictionary_gc95M.pkl", folder)
    shutil.copy(DICTS / "gene_median_dictionary_gc95M.pkl", folder)
    vocab = models.get_vocabulary(folder)
    assert vocab.name == "gc104M" and vocab.token_ids == vocab_v2.token_ids


def test_folder_of_unknown_shape_is_a_clear_error(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "ckpt", "V2")
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 1000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.UnknownModelError, match="vocab_size=1000"):
        models.get_vocabulary(folder)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(models.UnknownModelError, match="config.json"):
        models.get_vocabulary(tmp_path)


def test_vocabulary_instance_passes_through(vocab_v2):
    assert models.get_vocabulary(vocab_v2) is vocab_v2
    assert isinstance(vocab_v2, Vocabulary)


def test_resolve_folder_hashes_its_weights_and_reads_its_task(tmp_path, vocab_v2):
    from transformers import BertForSequenceClassification

    from tests._tiny import tiny_config
    from tests.conftest import sha256

    config = tiny_config("V2")
    config.num_labels = 2
    config.id2label = {0: "healthy", 1: "disease"}
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    record = models.resolve(tmp_path)
    assert record.kind == "folder" and record.vocabulary is vocab_v2
    assert record.sha256 == sha256(tmp_path / "model.safetensors")
    assert record.task == "cell_classification" and record.labels == ("healthy", "disease")
    assert models.resolve(tmp_path, weights=False).file_hashes == {}


def test_resolve_loaded_model(vocab_v1):
    from transformers import BertModel

    from tests._tiny import tiny_config

    model = BertModel(tiny_config("V1"))
    record = models.resolve(model)
    assert record.kind == "loaded" and record.model is model
    assert record.vocabulary is vocab_v1 and record.task == "encoder" and record.sha256 is None
    assert models.get_vocabulary(model) is vocab_v1


def test_resolve_refuses_what_is_not_a_model(tmp_path, vocab_v2):
    with pytest.raises(models.UnknownModelError, match="neither a known Geneformer checkpoint"):
        models.resolve("Geneformer-V9")
    with pytest.raises(TypeError, match="not a model"):
        models.resolve(vocab_v2)
    make_tiny_checkpoint(tmp_path / "ckpt", "V2")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        models.resolve(tmp_path / "ckpt")
