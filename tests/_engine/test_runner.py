"""The shared model runner: batching, readouts, device/precision, OOM back-off."""

from __future__ import annotations

import itertools
import weakref

import numpy as np
import pytest
import torch

from scgf._engine import (
    LayerOutput,
    Runner,
    TokenMatrix,
    TokenSequences,
    layer_count,
    load_model,
    plan_batches,
    resolve_device,
    resolve_dtype,
)
from scgf._engine._distributed import shard
from scgf.pp._rank_encoding import tokens_to_csr
from tests._tiny import make_tiny_checkpoint
from tests.conftest import needs_dicts


def test_batches_are_length_sorted_within_budget():
    lengths = np.array([5, 300, 0, 120, 300, 7, 4000])
    batches = plan_batches(lengths, 600)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == [0, 1, 3, 4, 5, 6]  # the empty cell is left out
    assert list(lengths[flat]) == sorted(lengths[flat], reverse=True)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 600


def test_token_matrix_and_sequences_pad_alike():
    tokens = tokens_to_csr(np.array([3, 1]), np.array([2, 7, 3, 9], dtype=np.int32), 8)
    ids, lengths = TokenMatrix(tokens).take(np.array([1, 0]))
    assert ids.tolist() == [[9, 0, 0], [2, 7, 3]] and lengths.tolist() == [1, 3]
    sequences = TokenSequences([np.array([2, 7, 3]), np.array([9])])
    ids2, lengths2 = sequences.take(np.array([1, 0]))
    assert ids2.tolist() == ids.tolist() and lengths2.tolist() == lengths.tolist()


def test_layer_semantics():
    assert layer_count(12, -1) == 11 and layer_count(12, 0) == 12
    with pytest.raises(ValueError, match="emb_layer=1 is outside"):
        layer_count(6, 1)


def test_device_and_dtype_defaults():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="float16.*CPU"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(ValueError, match="use one of"):
        resolve_dtype("int8", torch.device("cpu"))


def test_shards_cover_cells_in_order():
    blocks = [shard(10, r, 3) for r in range(3)]
    assert blocks[0][0] == 0 and blocks[-1][1] == 10
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))


@pytest.fixture
def loaded(tmp_path, hub_settings):
    return load_model(make_tiny_checkpoint(tmp_path, "V2"), device=torch.device("cpu"))


def random_cells(lengths, seed=0):
    """V2-like cells: <cls> (2), random genes, <eos> (3)."""
    rng = np.random.default_rng(seed)
    cells = []
    for n in lengths:
        genes = rng.choice(np.arange(4, 20_000), size=n - 2, replace=False)
        cells.append(np.concatenate([[2], genes, [3]]).astype(np.int64))
    return cells


@needs_dicts
def test_out_of_memory_halves_the_budget_and_retries(loaded, monkeypatch):
    runner = Runner(loaded, LayerOutput(loaded), token_budget=64)
    lengths = np.array([10, 10, 10, 10])
    tokens = tokens_to_csr(lengths, np.arange(40, dtype=np.int32) + 4, 4096)
    real = Runner.forward
    failures = []

    def flaky(self, input_ids, batch_lengths):
        if input_ids.shape[0] > 2:
            failures.append(input_ids.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, input_ids, batch_lengths)

    monkeypatch.setattr(Runner, "forward", flaky)
    seen = [row for batch in runner.run(tokens) for row in batch.rows.tolist()]
    assert failures == [4] and sorted(seen) == [0, 1, 2, 3]
    assert runner.token_budget == 32


@needs_dicts
def test_out_of_memory_on_perturbed_copies_keeps_every_copy(loaded, monkeypatch):
    """Sequences (perturbed copies of one cell) take the same batching and back-off path,
    and each copy's output is what it is without back-off."""
    copies = random_cells([30] * 6, seed=3)
    expected = {}
    for batch in Runner(loaded, LayerOutput(loaded), token_budget=10_000).run(copies):
        for i, row in enumerate(batch.rows):
            expected[int(row)] = batch.output[i].clone()
    real = Runner.forward
    sizes = []

    def flaky(self, input_ids, batch_lengths):
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, input_ids, batch_lengths)

    monkeypatch.setattr(Runner, "forward", flaky)
    runner = Runner(loaded, LayerOutput(loaded), token_budget=180)
    got = {}
    for batch in runner.run(copies):
        assert len(batch.rows) <= 2
        for i, row in enumerate(batch.rows):
            got[int(row)] = batch.output[i].clone()
    assert sizes[:3] == [6, 3, 1] and runner.token_budget == 180 // 8  # one halving per OOM
    assert sorted(got) == list(range(6))
    for row, value in expected.items():
        torch.testing.assert_close(got[row], value, rtol=0, atol=1e-6)


@needs_dicts
def test_one_batch_of_outputs_is_alive_at_a_time(loaded):
    runner = Runner(loaded, LayerOutput(loaded), token_budget=64)
    alive = []
    for batch in runner.run(random_cells([20, 20, 20, 20])):
        alive.append(weakref.ref(batch.output))
        assert sum(ref() is not None for ref in alive) == 1


@needs_dicts
@pytest.mark.parametrize("emb_layer", [0, -1, -2])
def test_cls_only_equals_the_full_layer(loaded, emb_layer):
    full = LayerOutput(loaded, emb_layer)
    first = LayerOutput(loaded, emb_layer, cls_only=True)
    assert (first.top_layer is not None) == (emb_layer > -2)  # 2-layer model: -2 is the input
    for lengths in ([37, 12, 5], [9, 9]):  # padded and unpadded batches
        cells = random_cells(lengths, seed=len(lengths))
        ids, lens = TokenSequences(cells).take(np.arange(len(cells)))
        ids, lens = torch.from_numpy(ids), torch.from_numpy(lens)
        expected = Runner(loaded, full).forward(ids, lens)[:, :1]
        got = Runner(loaded, first).forward(ids, lens)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@needs_dicts
def test_runner_rejects_a_non_positive_budget(loaded):
    with pytest.raises(ValueError, match="batch_tokens=0"):
        Runner(loaded, LayerOutput(loaded), token_budget=0)
