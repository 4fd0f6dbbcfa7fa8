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
    TokenBudgetBatchSampler,
    TokenDataset,
    config_overrides,
    last_checkpoint,
    masked_lm_collator,
    training_arguments,
)
from scgf._train._trainer import token_budget_sizes
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


def train(tmp_path, vocab, n_cells=160, batch_tokens=None, **overrides):
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
        batch_tokens=batch_tokens,
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


# -- token-budget batches ------------------------------------------------------------------


def budget_lengths(n: int = 997, seed: int = 0) -> np.ndarray:
    """Cell lengths like Geneformer's (many distinct, some equal at a cap), one longer than
    the budget of the tests (1,000)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.integers(20, 240, n), 200)  # ~18 % at the 200 cap
    lengths[5] = 1500
    return lengths


def padded(batch: list[int], lengths: np.ndarray) -> int:
    return len(batch) * int(lengths[batch].max())


def test_token_budget_batches_hold_every_cell_once_within_the_budget():
    lengths = budget_lengths()
    sampler = TokenBudgetBatchSampler(lengths, 1000, seed=7)
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == len(token_budget_sizes(lengths, 1000))
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        over = [b for b in batches if padded(b, lengths) > 1000]
        assert over == [[5]]  # only the cell longer than the budget, alone
        assert batches[0] == [5]  # the longest batch first: memory errors show at once
        # greedy packing: one more cell of the batch's length would not fit
        full = [b for b in batches if (len(b) + 1) * lengths[b].max() <= 1000]
        assert len(full) <= 1  # only the shortest cells' last batch may have room left
        # similar lengths together: padding adds under 3 % to the real tokens
        assert sum(padded(b, lengths) for b in batches) < 1.03 * lengths.sum()


def test_token_budget_order_depends_only_on_seed_and_epoch():
    lengths = budget_lengths()

    def order(seed, epoch):
        sampler = TokenBudgetBatchSampler(lengths, 1000, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(7, 1) == order(7, 1)  # a new sampler (a resumed run) draws the same
    assert order(7, 0) != order(7, 1) and order(7, 1) != order(8, 1)
    first, second = order(7, 0), order(7, 1)
    # other batches follow each other, and cells of equal length change batches
    positions = {tuple(sorted(b)): i for i, b in enumerate(first)}
    moved = [positions.get(tuple(sorted(b))) for b in second]
    assert sum(m == i for i, m in enumerate(moved)) < 0.2 * len(second)
    capped = np.flatnonzero(lengths == 200)  # 5 per batch
    together = {tuple(sorted(set(b) & set(capped))) for b in first} - {()}
    again = {tuple(sorted(set(b) & set(capped))) for b in second} - {()}
    assert together != again


def test_token_budget_batches_are_dealt_out_to_processes():
    # what accelerate.prepare does under torchrun: each process takes every other batch
    from accelerate.data_loader import BatchSamplerShard

    lengths = budget_lengths()
    sampler = TokenBudgetBatchSampler(lengths, 1000, seed=7)
    shards = [BatchSamplerShard(sampler, num_processes=2, process_index=r) for r in (0, 1)]
    per_rank = [list(s) for s in shards]
    n_batches = len(sampler)
    assert [len(s) for s in shards] == [len(b) for b in per_rank] == [-(-n_batches // 2)] * 2
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(len(lengths)))  # every cell on some process
    assert len(seen) - len(lengths) <= max(map(len, list(sampler)))  # one batch topped up
    assert all(padded(b, lengths) <= 1000 or len(b) == 1 for r in per_rank for b in r)


def test_bad_token_budget_is_refused():
    with pytest.raises(ValueError, match="batch_tokens=0; give a positive"):
        TokenBudgetBatchSampler([5, 6], 0)
    with pytest.raises(TypeError, match="batch_tokens=1.5; give a whole number"):
        TokenBudgetBatchSampler([5, 6], 1.5)


def test_trainer_with_a_token_budget(tmp_path, vocab_v2):
    # cells of 25-31 tokens, budget 100: 3 cells per batch
    model, trainer = train(tmp_path, vocab_v2, 60, batch_tokens=100, num_train_epochs=2)
    lengths = trainer.train_dataset.lengths
    loader = trainer.get_train_dataloader()
    shapes = [tuple(batch["input_ids"].shape) for batch in loader]
    assert len(shapes) == len(loader) == len(token_budget_sizes(lengths, 100))
    assert all(n * width <= 100 for n, width in shapes)
    assert sum(n for n, _ in shapes) == len(lengths)
    before = masked_accuracy(model.eval(), vocab_v2)
    trainer.train()
    assert trainer.state.global_step == 2 * len(shapes)  # one optimizer step per batch
    assert masked_accuracy(model.eval(), vocab_v2) > before + 0.2
    # max_steps counts budget batches across epochs
    _, capped = train(
        tmp_path / "capped", vocab_v2, 60, batch_tokens=100, max_steps=len(shapes) + 5
    )
    capped.train()
    assert capped.state.global_step == len(shapes) + 5 and 1 < capped.state.epoch < 2


def test_config_overrides():
    assert config_overrides() == {}
    assert config_overrides(attention_dropout=0) == {"attention_probs_dropout_prob": 0.0}
    with pytest.raises(ValueError, match=r"attention_dropout=1.0; give a rate in \[0, 1\)"):
        config_overrides(attention_dropout=1.0)
