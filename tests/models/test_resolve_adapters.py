"""resolve() on fine-tuned multi-task folders and LoRA adapter folders."""

from __future__ import annotations

import json

import pytest

import scgf
from scgf._train import MultiTaskClassifier
from tests._heads import TASKS, adapter_folder, small_backbone, tiny_folder

pytestmark = pytest.mark.usefixtures("hub_settings")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("base"), seed=5)


def test_adapter_folder_is_the_fine_tuned_model_on_its_base(tmp_path, base):
    folder, _ = adapter_folder(tmp_path / "adapter", base)
    record = scgf.models.resolve(folder)
    assert record.kind == "adapter" and record.adapter == folder
    assert record.task == "cell_classification"
    assert record.labels == ("b", "t", "nk")
    assert record.base.folder == base and record.base.task == "masked_lm"
    assert record.vocabulary.name == "gc104M"
    info = record.describe()
    assert info["model"] == str(folder) and len(info["sha256"]) == 64
    assert info["base_model"] == str(base) and info["base_sha256"] == record.base.sha256
    assert info["sha256"] != info["base_sha256"]


def test_base_model_from_scgf_json_first_then_the_adapter_config(tmp_path, base):
    folder, _ = adapter_folder(tmp_path / "adapter", base)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "not-there")
    config_file.write_text(json.dumps(config))
    assert scgf.models.resolve(folder).base.folder == base  # scgf.json wins
    (folder / "scgf.json").unlink()
    with pytest.raises(scgf.models.UnknownModelError, match="not-there") as err:
        scgf.models.resolve(folder)
    assert "the base model of the adapter folder" in "".join(err.value.__notes__)
    config["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(config))
    assert scgf.models.resolve(folder).base.folder == base
    del config["base_model_name_or_path"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not name its base model"):
        scgf.models.resolve(folder)


def test_adapter_without_its_model_config_is_refused(tmp_path, base):
    folder, _ = adapter_folder(tmp_path / "adapter", base)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json, so the classes of its SEQ_CLS head"):
        scgf.models.resolve(folder)


def test_multitask_folders(tmp_path, base):
    model = MultiTaskClassifier.from_backbone(small_backbone(), TASKS)
    model.config.vocab_size, model.config.max_position_embeddings = 20275, 4096  # V2 shape
    folder, _ = adapter_folder(tmp_path / "adapter", base, kind="multitask")
    for record in (scgf.models.resolve(folder), scgf.models.resolve(model)):
        assert record.task == "multitask_cell_classification"
        assert record.labels is None
        assert record.tasks == {t: tuple(c) for t, c in TASKS.items()}
