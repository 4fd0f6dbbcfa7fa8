"""Attention dropout as fused attention plus a sparse correction equals dropout on the
materialised probabilities, entry for entry, forward and backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from scgf._train import _cpu_attention as cpu_attention
from scgf._train._cpu_attention import dropout_attention, dropped_entries, use_on_cpu


def materialised(query, key, value, mask, p, scale, dropped):
    """Dropout on the full (positions × positions) probabilities, written out plainly."""
    scores = (query.double() @ key.double().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, -1)
    keep = torch.ones(probs.numel(), dtype=torch.float64)
    keep[dropped] = 0.0
    return (probs * keep.view(probs.shape) / (1 - p)) @ value.double()


def qkv(batch=3, heads=2, width=40, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, width, size, generator=generator, requires_grad=True)
        for _ in range(3)
    ]


@pytest.mark.parametrize("masking", [None, "padding", "per-query", "broadcast"])
def test_equals_dropout_on_materialised_probabilities(masking):
    query, key, value = qkv()
    batch, heads, width, size = query.shape
    mask = None
    if masking == "padding":  # the second cell has 25 real positions
        mask = torch.ones(batch, 1, width, width, dtype=torch.bool)
        mask[1, :, :, 25:] = False
    elif masking == "per-query":  # each query of the first cell sees a different set of keys
        mask = torch.ones(batch, 1, width, width, dtype=torch.bool)
        mask[0, 0] = torch.ones(width, width, dtype=torch.bool).tril()
        mask[1, :, :, 25:] = False
    elif masking == "broadcast":  # (batch, 1, 1, keys), broadcast over the queries
        mask = torch.ones(batch, 1, 1, width, dtype=torch.bool)
        mask[1, ..., 25:] = False
    p, scale = 0.2, 1 / math.sqrt(size)
    dropped = dropped_entries(batch * heads * width * width, p, torch.Generator().manual_seed(1))
    got = dropout_attention(query, key, value, mask, p, scale, dropped)
    expected = materialised(query, key, value, mask, p, scale, dropped)
    np.testing.assert_allclose(got.detach(), expected.detach(), rtol=0, atol=1e-5)
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
    got_grads = torch.autograd.grad(got, (query, key, value), upstream)
    expected_grads = torch.autograd.grad(expected, (query, key, value), upstream.double())
    for a, b in zip(got_grads, expected_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # and the correction matters: without the dropped entries the result is another one
    undropped = materialised(query, key, value, mask, p, scale, dropped[:0])
    assert (got.detach() - undropped).abs().max() > 0.1


def test_bfloat16_inputs_close_to_float32():
    query, key, value = qkv(seed=3)
    p, scale = 0.1, 1 / math.sqrt(8)
    dropped = dropped_entries(query.numel() // 8 * 40, p, torch.Generator().manual_seed(4))
    full = dropout_attention(query, key, value, None, p, scale, dropped)
    half = dropout_attention(*(t.bfloat16() for t in (query, key, value)), None, p, scale, dropped)
    assert half.dtype == torch.bfloat16
    np.testing.assert_allclose(half.float().detach(), full.detach(), rtol=0, atol=0.05)


def test_dropped_entries_are_an_independent_bernoulli_draw():
    n, p = 2_000_000, 0.02
    flat = dropped_entries(n, p, torch.Generator().manual_seed(0))
    assert torch.all(flat[1:] > flat[:-1]) and flat[0] >= 0 and flat[-1] < n
    sd = math.sqrt(n * p * (1 - p))
    assert abs(len(flat) - n * p) < 4 * sd
    dropped = torch.zeros(n, dtype=torch.bool)
    dropped[flat] = True
    # neighbours are independent: both dropped at rate p², not more or less
    both = (dropped[1:] & dropped[:-1]).sum().item()
    assert abs(both - n * p * p) < 4 * math.sqrt(n * p * p)
    # every position equally likely (no bias toward the start or end of a draw)
    counts = torch.zeros(50)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4000):
        counts[dropped_entries(50, 0.1, generator)] += 1
    assert abs(counts.mean().item() - 400) < 8 and counts.min() > 330 and counts.max() < 470
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        dropped_entries(10, 0.0)


def test_unbiased_over_many_draws():
    query, key, value = qkv(batch=1, heads=1, width=12, size=4, seed=5)
    p, scale = 0.3, 0.5
    with torch.no_grad():
        mean = sum(dropout_attention(query, key, value, None, p, scale) for _ in range(3000)) / 3000
        plain = materialised(query, key, value, None, 0.0, scale, torch.empty(0, dtype=torch.long))
    np.testing.assert_allclose(mean, plain, rtol=0, atol=0.03)


def tiny_model(dropout: float) -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        attention_probs_dropout_prob=dropout,
        hidden_dropout_prob=0.0,
        attn_implementation="sdpa",
    )
    return BertForMaskedLM(config)


def test_model_switch_trains_evaluates_and_saves_plainly(tmp_path):
    assert not use_on_cpu(tiny_model(0.0))  # nothing to speed up without attention dropout
    model = tiny_model(0.2)
    ids = torch.randint(5, 50, (4, 30), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 20:] = 0
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    assert use_on_cpu(model) and model.config._attn_implementation == cpu_attention.NAME
    with torch.no_grad():  # evaluation: no dropout, the sdpa result exactly
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)
    model.train()
    calls = []
    original = cpu_attention._DropoutAttention.apply
    cpu_attention._DropoutAttention.apply = lambda *a: calls.append(1) or original(*a)
    try:
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
    finally:
        cpu_attention._DropoutAttention.apply = original
    assert len(calls) == 2 and torch.isfinite(loss)  # one per layer
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.save_pretrained(tmp_path)
    assert cpu_attention.NAME not in (tmp_path / "config.json").read_text()
    reloaded = BertForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        np.testing.assert_allclose(
            reloaded(input_ids=ids, attention_mask=mask).logits, before, atol=1e-6
        )


def test_trains_under_torch_compile_with_the_eager_losses():
    # Trainer(torch_compile=True) compiles the model: the dropout's sparse draw runs eagerly
    # between the compiled parts, drawing the same random numbers as without compiling.
    ids = torch.randint(5, 50, (4, 30), generator=torch.Generator().manual_seed(0))
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = tiny_model(0.2).train()
        assert use_on_cpu(model)
        run = torch.compile(model, backend="eager") if compiled else model
        torch.manual_seed(1)
        loss = run(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_lora_wrapped_classifier_is_switched():
    pytest.importorskip("peft")
    from transformers import BertForSequenceClassification

    from scgf._train._lora import apply_lora

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_model(0.1).config)
    wrapped = apply_lora(model, r=4, alpha=8)
    assert use_on_cpu(wrapped) and model.config._attn_implementation == cpu_attention.NAME
    ids = torch.randint(5, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    wrapped.train()
    calls = []
    original = cpu_attention._DropoutAttention.apply
    cpu_attention._DropoutAttention.apply = lambda *a: calls.append(1) or original(*a)
    try:
        wrapped(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    finally:
        cpu_attention._DropoutAttention.apply = original
    assert len(calls) == 2
    trained = [n for n, p in wrapped.named_parameters() if p.requires_grad and p.grad is not None]
    assert any("lora" in n for n in trained)


def test_scgf_trainers_train_cpu_models_with_it(tmp_path):
    from transformers import TrainingArguments

    from scgf._train import LengthGroupedTrainer

    model = tiny_model(0.1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    LengthGroupedTrainer(model=model, args=args)
    assert model.config._attn_implementation == cpu_attention.NAME
    built = []
    trainer = LengthGroupedTrainer(
        model_init=lambda: built.append(tiny_model(0.1)) or built[-1], args=args
    )
    assert trainer.call_model_init().config._attn_implementation == cpu_attention.NAME
