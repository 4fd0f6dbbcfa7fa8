"""The training sibling end to end on a constructed task with a known answer: a tiny
``BertForMaskedLM`` learns which gene sits at each rank of a fixed ranking, through the
dataset, the MLM collator, the length-grouped Trainer and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from scgf._train import (
    LengthGroupedTrainer,
    TokenDataset,
    last_checkpoint,
    masked_lm_collator,
    training_arguments,
)
from scgf.pp._rank_encoding import tokens_to_csr
from tests._tiny import tiny_config
from tests.conftest import needs_dicts

pytestmark = needs_dicts

RANKING = np.array([2, *range(1000, 1030), 3])  # <cls>, 30 genes in a fixed order, <eos>
ALWAYS = 23  # every training cell holds the top 23 genes (depths 23-29)


def corpus(n_cells: int, seed: int):
    """Cells that all rank the same genes the same way, truncated at random depths."""
    rng = np.random.default_rng(seed)
    depths = rng.integers(ALWAYS + 1, len(RANKING), n_cells)
    cells = [np.concatenate([RANKING[: int(n)], [3]]) for n in depths]
    lengths = np.array([len(c) for c in cells])
    return tokens_to_csr(lengths, np.concatenate(cells).astype(np.int32), 4096)


def masked_accuracy(model, vocab) -> float:
    """How often the model names the gene at each masked rank (of the top ``ALWAYS``) of a
    full cell."""
    positions = torch.arange(1, ALWAYS + 1)
    ids = torch.from_numpy(RANKING).repeat(len(positions), 1)
    ids[torch.arange(len(positions)), positions] = vocab.token_ids["<mask>"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    predicted = logits[torch.arange(len(positions)), positions].argmax(-1)
    return float((predicted == torch.from_numpy(RANKING[1 : ALWAYS + 1])).float().mean())


def train(tmp_path, vocab, n_cells=160, **overrides):
    torch.manual_seed(0)
    config = tiny_config("V2", hidden=32)
    config.initializer_range = 0.02
    model = BertForMaskedLM(config)
    options = dict(
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        num_train_epochs=6,
        save_strategy="epoch",
        logging_strategy="no",
        seed=0,
        use_cpu=True,
    )
    args = training_arguments(tmp_path, **{**options, **overrides})
    trainer = LengthGroupedTrainer(
        model=model,
        args=args,
        train_dataset=TokenDataset(corpus(n_cells, seed=1)),
        data_collator=masked_lm_collator(vocab, seed=0),
    )
    return model, trainer


def test_masked_lm_learns_the_ranking(tmp_path, vocab_v2):
    model, trainer = train(tmp_path, vocab_v2)
    before = masked_accuracy(model.eval(), vocab_v2)
    trainer.train()
    after = masked_accuracy(model.eval(), vocab_v2)
    assert before < 0.1 and after > 0.9, (before, after)


def test_batches_are_grouped_by_length(tmp_path, vocab_v2):
    # transformers groups within mega-batches of up to 50 batches (fewer on small data)
    _, trainer = train(tmp_path, vocab_v2, n_cells=1600)
    lengths = trainer.train_dataset.lengths
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(len(lengths)))
    spans = [np.ptp(lengths[order[i : i + 16]]) for i in range(0, len(order), 16)]
    random_spans = [np.ptp(lengths[i : i + 16]) for i in range(0, len(lengths), 16)]
    assert np.mean(spans) < 0.25 * np.mean(random_spans)


def test_training_resumes_from_the_last_checkpoint(tmp_path, vocab_v2):
    _, trainer = train(tmp_path, vocab_v2, num_train_epochs=2)
    trainer.train()
    first = last_checkpoint(tmp_path)
    assert first is not None and first.endswith(f"checkpoint-{trainer.state.global_step}")
    _, longer = train(tmp_path, vocab_v2, num_train_epochs=3)
    longer.train(resume_from_checkpoint=last_checkpoint(tmp_path))
    steps_per_epoch = trainer.state.global_step // 2
    assert longer.state.global_step == 3 * steps_per_epoch
    assert last_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("bad", [{"cell_labels": np.zeros(3)}])
def test_dataset_rejects_labels_of_another_length(bad):
    with pytest.raises(ValueError, match="3 entries for"):
        TokenDataset(corpus(5, seed=0), **bad)


def test_checkpoints_of_another_training_are_refused(tmp_path, vocab_v2):
    _, trainer = train(tmp_path, vocab_v2, num_train_epochs=1)
    fingerprint = {"cells": "10:abc", "model": "tiny", "learning_rate": 0.01}
    assert last_checkpoint(tmp_path, fingerprint) is None  # first run: recorded
    trainer.train()
    assert last_checkpoint(tmp_path, fingerprint).endswith("checkpoint-10")
    with pytest.raises(ValueError, match=r"learning_rate \(saved 0.01, now 0.1\)"):
        last_checkpoint(tmp_path, {**fingerprint, "learning_rate": 0.1})
    assert last_checkpoint(tmp_path, {**fingerprint, "learning_rate": 0.1}, restart=True) is None
    assert last_checkpoint(tmp_path, {**fingerprint, "learning_rate": 0.1}) is not None
