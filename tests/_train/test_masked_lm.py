"""Masked-only decoding gives BertForMaskedLM's loss and gradients, and saves as a plain
BertForMaskedLM checkpoint."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM
from transformers.trainer_utils import EvalPrediction

from scgf._train import TokenDataset, masked_lm_collator
from scgf._train._masked_lm import MaskedAccuracy, MaskedOnlyBertForMaskedLM, masked_predictions
from scgf.pp import tokenize
from tests._tiny import tiny_config, torch_threads
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread (more threads spin on a busy machine)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def batch(vocab_v2):
    """A masked, padded batch of 6 real cells of different lengths."""
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:6].copy()
    tokens = tokenize(adata, model=vocab_v2, inplace=False)
    dataset = TokenDataset(tokens)
    collate = masked_lm_collator(vocab_v2, seed=5)
    out = collate([dataset[i] for i in range(len(dataset))])
    assert (out["attention_mask"] == 0).any()  # padding present
    assert (out["labels"] != -100).sum() > 100
    return out


def pair(seed=0):
    torch.manual_seed(seed)
    config = tiny_config("V2", hidden=32)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    full = BertForMaskedLM(config)
    masked = MaskedOnlyBertForMaskedLM(config)
    masked.load_state_dict(full.state_dict())
    return full, masked


def test_loss_and_gradients_equal_the_full_decoder(batch):
    full, masked = pair()
    loss_full = full(**batch).loss
    out = masked(**batch)
    n_masked = int((batch["labels"] != -100).sum())
    assert out.logits.shape == (n_masked, full.config.vocab_size)
    assert abs(loss_full.item() - out.loss.item()) < 1e-6
    loss_full.backward()
    out.loss.backward()
    grads = dict(full.named_parameters())
    for name, param in masked.named_parameters():
        reference = grads[name].grad
        assert param.grad is not None, name
        scale = reference.abs().max().item() + 1e-12
        assert (param.grad - reference).abs().max().item() <= 1e-5 * scale, name
    # the decoder is tied to the word embeddings, as in BertForMaskedLM
    assert masked.cls.predictions.decoder.weight is masked.bert.embeddings.word_embeddings.weight


def test_a_wrong_gather_would_be_caught(batch):
    # Shifting the labels by one position changes the loss: the test above can fail.
    full, masked = pair()
    shifted = dict(batch, labels=torch.roll(batch["labels"], 1, dims=1))
    assert abs(full(**batch).loss.item() - masked(**shifted).loss.item()) > 1e-3


def test_without_labels_it_is_bert_for_masked_lm(batch):
    full, masked = pair()
    inputs = {k: v[:2] for k, v in batch.items() if k != "labels"}
    torch.testing.assert_close(masked(**inputs).logits, full(**inputs).logits)


def test_saved_checkpoint_is_a_standard_bert_for_masked_lm(tmp_path, batch):
    _full, masked = pair(seed=3)
    masked.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    loaded, info = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert abs(loaded(**batch).loss.item() - masked(**batch).loss.item()) < 1e-6


def test_a_batch_without_targets_gives_zero_loss(batch):
    _, masked = pair()
    none = dict(batch, labels=torch.full_like(batch["labels"], -100))
    out = masked(**none)
    assert out.loss.item() == 0.0 and out.loss.requires_grad


def test_accuracy_counts_masked_positions_only():
    labels = torch.tensor([[5, -100, 7, -100], [-100, 9, -100, -100]])
    logits = torch.zeros(3, 12)
    logits[0, 5] = logits[1, 1] = logits[2, 9] = 1.0  # right, wrong, right
    predicted = masked_predictions(logits, labels)
    assert predicted.tolist() == [[5, -100, 1, -100], [-100, 9, -100, -100]]
    metric = MaskedAccuracy()
    assert metric(EvalPrediction(predicted[:1], labels[:1]), compute_result=False) is None
    result = metric(EvalPrediction(predicted[1:], labels[1:]), compute_result=True)
    assert result == {"accuracy": pytest.approx(2 / 3), "n_masked": 3}
    assert np.isnan(metric(EvalPrediction(predicted[:0], labels[:0]))["accuracy"])
