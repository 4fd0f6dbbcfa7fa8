"""The shared model runner: batching, layer choice, device/precision, OOM back-off."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scgf._engine import (
    Runner,
    layer_count,
    load_model,
    padded_batch,
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


def test_padded_batch_right_pads():
    tokens = tokens_to_csr(np.array([3, 1]), np.array([2, 7, 3, 9], dtype=np.int32), 8)
    ids, lengths = padded_batch(tokens, np.array([1, 0]))
    assert ids.tolist() == [[9, 0, 0], [2, 7, 3]] and lengths.tolist() == [1, 3]


def test_layer_semantics():
    assert layer_count(12, -1) == 11 and layer_count(12, 0) == 12
    with pytest.raises(ValueError, match="outside"):
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


@needs_dicts
def test_out_of_memory_halves_the_budget_and_retries(tmp_path, hub_settings, monkeypatch):
    loaded = load_model(make_tiny_checkpoint(tmp_path, "V2"), device=torch.device("cpu"))
    runner = Runner(loaded, token_budget=64)
    lengths = np.array([10, 10, 10, 10])
    tokens = tokens_to_csr(lengths, np.arange(40, dtype=np.int32) + 4, 4096)
    real = Runner.hidden_states
    failures = []

    def flaky(self, input_ids, batch_lengths):
        if input_ids.shape[0] > 2:
            failures.append(input_ids.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, input_ids, batch_lengths)

    monkeypatch.setattr(Runner, "hidden_states", flaky)
    seen = []
    runner.run(tokens, lambda rows, ids, lens, hidden: seen.extend(rows.tolist()))
    assert failures == [4] and sorted(seen) == [0, 1, 2, 3] and runner.token_budget == 32


@needs_dicts
@pytest.mark.parametrize("layer", [0, -1, -2])
def test_first_token_only_equals_the_full_layer(tmp_path, hub_settings, layer):
    torch.manual_seed(1)
    folder = make_tiny_checkpoint(tmp_path, "V2")
    loaded = load_model(folder, device=torch.device("cpu"))
    full = Runner(loaded, layer=layer)
    first = Runner(loaded, layer=layer, first_token_only=True)
    assert (first.top_layer is not None) == (layer > -2)  # the 2-layer model's -2 is the input
    for lengths in ([37, 12, 5], [9, 9]):  # padded and unpadded batches
        ids = torch.randint(4, 20_000, (len(lengths), max(lengths)))
        ids[:, 0] = 2
        for i, n in enumerate(lengths):
            ids[i, n:] = 0
        lengths = torch.tensor(lengths)
        expected = full.hidden_states(ids, lengths)[:, :1]
        got = first.hidden_states(ids, lengths)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
