"""LoRA through peft: what trains, what stays, what is saved, and that it learns."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import BertForSequenceClassification, BertForTokenClassification

from scgf._train import (
    MultiTaskClassifier,
    apply_lora,
    is_adapter_folder,
    quantized_backbone_kwargs,
    save_adapter,
)
from tests._heads import TASKS, small_backbone, toy_cells, train


def sequence_classifier(seed=0):
    backbone = small_backbone(seed)
    model = BertForSequenceClassification(backbone.config)
    model.bert.load_state_dict(backbone.bert.state_dict(), strict=False)
    return model


def classifiers():
    backbone = small_backbone()
    token = BertForTokenClassification(backbone.config)
    multi = MultiTaskClassifier.from_backbone(backbone, TASKS, pooling="attention")
    return {
        "cell_classification": sequence_classifier(),
        "gene_classification": token,
        "multitask_cell_classification": multi,
    }


@pytest.mark.parametrize("task", ["cell_classification", "gene_classification", "multitask"])
def test_only_adapters_and_head_train(task):
    name = "multitask_cell_classification" if task == "multitask" else task
    model = apply_lora(classifiers()[name], task=name, r=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    heads = trainable - adapters
    assert heads and all(".modules_to_save." in n for n in heads)
    # Every linear layer of every encoder layer has an adapter (6 per layer, A and B each).
    assert len(adapters) == 2 * 6 * 2
    if task == "multitask":
        assert {n.split(".modules_to_save")[0] for n in heads} == {
            "base_model.model.heads.marker",
            "base_model.model.heads.rank",
            "base_model.model.pool",
        }
    else:
        assert any(".classifier." in n for n in heads)
    embeddings = model.get_base_model().bert.embeddings.word_embeddings.weight
    assert not embeddings.requires_grad


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_lora_learns_keeps_base_weights_and_saves_only_the_adapter(tmp_path):
    torch.manual_seed(0)
    model = sequence_classifier()
    model.config.id2label, model.config.label2id = {0: "absent", 1: "present"}, {}
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora = apply_lora(model, task="cell_classification", r=8, alpha=16, dropout=0.0)
    ids, labels = toy_cells(512, seed=0)
    train(lora, ids, labels[:, 0], steps=100, lr=3e-3)
    test_ids, test_labels = toy_cells(256, seed=1)
    with torch.no_grad():
        logits = lora(input_ids=test_ids).logits
    assert float((logits.argmax(1) == test_labels[:, 0]).float().mean()) >= 0.95
    # The base weights did not move (weight decay included); the head and adapters did.
    for name, value in lora.get_base_model().state_dict().items():
        plain = name.replace(".base_layer", "")
        if "lora_" in name or "modules_to_save" in name or plain not in base:
            continue
        if plain.startswith(("classifier.", "bert.pooler.")):
            continue  # the wrapper's frozen original copy of a trained head
        assert torch.equal(value, base[plain]), name
    head = lora.get_base_model().classifier.modules_to_save["default"].weight
    assert not torch.equal(head, base["classifier.weight"])
    # Saving writes the adapters and the trained head layers only, plus the model's config.
    folder = save_adapter(lora, tmp_path / "adapter", base_model="my-base")
    assert is_adapter_folder(folder) and not is_adapter_folder(tmp_path)
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k or ".classifier." in k or ".pooler." in k for k in keys)
    assert not any("word_embeddings" in k or "LayerNorm" in k for k in keys)
    assert (folder / "config.json").is_file()
    # Reloaded onto a fresh copy of the base model: the same logits.
    fresh = sequence_classifier()
    reloaded = PeftModel.from_pretrained(fresh, folder).eval()
    with torch.no_grad():
        again = reloaded(input_ids=test_ids).logits
    torch.testing.assert_close(again, logits, atol=1e-6, rtol=0)
    assert reloaded.peft_config["default"].base_model_name_or_path == "my-base"


def test_wrong_task_and_model():
    with pytest.raises(ValueError, match="does not fit a BertForTokenClassification"):
        apply_lora(classifiers()["gene_classification"], task="cell_classification")
    with pytest.raises(TypeError, match="holds no BERT encoder"):
        apply_lora(torch.nn.Linear(2, 2), task="cell_classification")
    with pytest.raises(TypeError, match="needs a peft.PeftModel"):
        save_adapter(sequence_classifier(), "unused")


def test_quantized_backbone_kwargs():
    assert quantized_backbone_kwargs(None, "cpu") == {}
    with pytest.raises(ValueError, match=r"needs a CUDA GPU .* the device is cpu.*quantize=None"):
        quantized_backbone_kwargs("4bit", torch.device("cpu"))
    with pytest.raises(ValueError, match="use None, '4bit'"):
        quantized_backbone_kwargs("2bit", "cpu")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ImportError, match=r"scgf\[quant\]"):
            quantized_backbone_kwargs("4bit", "cuda:1")
        return
    kwargs = quantized_backbone_kwargs("4bit", "cuda:1")
    config = kwargs["quantization_config"]
    assert kwargs["device_map"] == {"": 1}
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert "heads" in config.llm_int8_skip_modules
