"""MultiTaskClassifier: pretrained encoder weights, what the heads read, the loss, saving."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from transformers import BertForMaskedLM

from scgf._train import MultiTaskClassifier
from tests._heads import TASKS, padded, small_backbone, tiny_folder, toy_cells, train
from tests.conftest import needs_dicts

THREE = {"cell type": ["b", "t", "nk"], "donor.sex": ["f", "m"]}


def test_encoder_starts_from_the_checkpoint(tmp_path, hub_settings):
    folder = tiny_folder(tmp_path / "base", seed=3)
    model = MultiTaskClassifier.from_backbone(folder, THREE, pooling="attention")
    pretrained = BertForMaskedLM.from_pretrained(folder).bert.state_dict()
    encoder = model.bert.state_dict()
    assert set(encoder) == set(pretrained)
    for name, value in encoder.items():
        assert torch.equal(value, pretrained[name]), name
    # Heads: Xavier-uniform, zero bias; one per task in order, '.' kept out of module names.
    assert list(model.heads) == ["cell type", "donor_sex"]
    for task, classes in THREE.items():
        head = model.head(task)
        bound = math.sqrt(6 / (head.in_features + head.out_features))
        assert head.out_features == len(classes)
        assert torch.all(head.bias == 0)
        assert head.weight.abs().max() <= bound
        assert head.weight.abs().max() > 0.5 * bound
    assert model.config.scgf_tasks == THREE


def test_from_a_loaded_model_copies_its_encoder():
    backbone = small_backbone(seed=1)
    model = MultiTaskClassifier.from_backbone(
        backbone, TASKS, task_weights={"rank": 2, "marker": 1}
    )
    for name, value in backbone.bert.state_dict().items():
        assert torch.equal(model.bert.state_dict()[name], value), name
    assert model.config.scgf_task_weights == [1.0, 2.0]  # task order, not the dict's


@pytest.mark.parametrize("pooling", ["cls", "attention"])
def test_heads_read_the_pooled_vector(pooling):
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(small_backbone(), THREE, pooling=pooling).eval()
    ids, mask = padded([[2, *range(20, 40), 3], [2, 50, 51, 52, 3], [2, 7, 3]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long()).logits
        hidden = model.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    if pooling == "cls":
        cell = hidden[:, 0]
    else:  # softmax of <hidden, query> over each cell's real positions
        cell = torch.stack(
            [
                (torch.softmax(h[m] @ model.pool.query.detach(), 0)[:, None] * h[m]).sum(0)
                for h, m in zip(hidden, mask, strict=True)
            ]
        )
    for task, got in zip(THREE, logits, strict=True):
        head = model.head(task)
        expected = cell @ head.weight.detach().T + head.bias.detach()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_padding_does_not_change_attention_pooling():
    model = MultiTaskClassifier.from_backbone(small_backbone(), THREE, pooling="attention").eval()
    cell = [2, *range(60, 70), 3]
    alone, alone_mask = padded([cell])
    batch, batch_mask = padded([cell, [2, *range(100, 140), 3]])
    with torch.no_grad():
        single = model(input_ids=alone, attention_mask=alone_mask.long()).logits
        in_batch = model(input_ids=batch, attention_mask=batch_mask.long()).logits
        hidden = model.bert(input_ids=batch, attention_mask=batch_mask.long())[0]
        unmasked = model.pool(hidden, torch.ones_like(batch_mask))[0]
        masked = model.pool(hidden, batch_mask)[0]
    for a, b in zip(single, in_batch, strict=True):
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
    assert (unmasked - masked).abs().max() > 1e-3  # so the padding would show if not masked


def test_loss_weights_and_missing_labels():
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(small_backbone(), TASKS).eval()
    ids, labels = toy_cells(6, seed=0)
    labels[:, 1] = -100  # no cell has a "rank" label
    labels[2, 0] = -100
    logits = model(input_ids=ids).logits
    marker = F.cross_entropy(logits[0][[0, 1, 3, 4, 5]], labels[[0, 1, 3, 4, 5], 0])
    model.config.scgf_task_weights = [0.25, 4.0]
    out = model(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, 0.25 * marker, atol=1e-6, rtol=0)
    out.loss.backward()
    assert torch.all(model.head("rank").weight.grad == 0)
    assert model.head("marker").weight.grad.abs().max() > 0
    # With both tasks labelled the weights scale each task's mean cross-entropy.
    ids, labels = toy_cells(8, seed=1)
    logits = model(input_ids=ids).logits
    per_task = [F.cross_entropy(x, labels[:, i]) for i, x in enumerate(logits)]
    for weights in ([1.0, 1.0], [0.5, 2.0]):
        model.config.scgf_task_weights = weights
        loss = model(input_ids=ids, labels=labels).loss
        expected = weights[0] * per_task[0] + weights[1] * per_task[1]
        torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


def test_save_and_load_give_the_same_logits(tmp_path):
    model = MultiTaskClassifier.from_backbone(small_backbone(), THREE, pooling="attention")
    with torch.no_grad():
        for head in model.heads.values():
            head.bias.normal_()
    model.eval().save_pretrained(tmp_path)
    loaded = MultiTaskClassifier.from_pretrained(tmp_path).eval()
    assert loaded.config.architectures == ["MultiTaskClassifier"]
    assert loaded.tasks == THREE and loaded.config.scgf_pooling == "attention"
    ids, mask = padded([[2, *range(20, 40), 3], [2, 50, 51, 3]])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask.long()).logits
        after = loaded(input_ids=ids, attention_mask=mask.long()).logits
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)


def test_learns_two_tasks():
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(small_backbone(), TASKS, pooling="attention")
    ids, labels = toy_cells(512, seed=0, missing=0.2)
    train(model, ids, labels, steps=100, lr=3e-3)
    test_ids, test_labels = toy_cells(256, seed=1)
    with torch.no_grad():
        logits = model(input_ids=test_ids).logits
    for i, task in enumerate(TASKS):
        accuracy = float((logits[i].argmax(1) == test_labels[:, i]).float().mean())
        assert accuracy >= 0.95, (task, accuracy)


@pytest.mark.parametrize(
    ("tasks", "options", "match"),
    [
        ({}, {}, "at least one task"),
        ({"a": ["x"]}, {}, "at least 2 classes"),
        ({"a.b": ["x", "y"], "a_b": ["x", "y"]}, {}, "clash"),
        (TASKS, {"task_weights": [1.0]}, "one finite, non-negative weight per task"),
        (TASKS, {"task_weights": {"marker": 1.0}}, "no weight for the task"),
        (TASKS, {"pooling": "mean"}, "use 'cls' or 'attention'"),
    ],
)
def test_bad_tasks(tasks, options, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskClassifier.from_backbone(small_backbone(), tasks, **options)


@needs_dicts
def test_a_folder_without_an_encoder_is_refused(tmp_path, hub_settings):
    from safetensors.torch import save_file

    folder = tiny_folder(tmp_path / "base")
    encoder = BertForMaskedLM.from_pretrained(folder).bert.state_dict()
    kept = {f"bert.{k}": v.clone() for k, v in encoder.items() if "layer.1." not in k}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="encoder weights were missing"):
        MultiTaskClassifier.from_backbone(folder, TASKS)
