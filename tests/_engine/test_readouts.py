"""Readouts against a plain transformers forward: logits with the head kept, attention weights
against eager ``output_attentions``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification, BertForTokenClassification

from scgf._engine import AttentionSummary, LayerOutput, Logits, Runner, load_model
from tests._tiny import tiny_config
from tests.conftest import needs_dicts

pytestmark = needs_dicts

CELLS = [
    np.array([2, *range(100, 130), 3]),
    np.array([2, *range(500, 511), 3]),
    np.array([2, *range(900, 906), 3]),
]


def run_all(runner, cells, positions_dim=None):
    """Each cell's output, padding cut off along ``positions_dim`` (if any)."""
    out = {}
    for batch in runner.run(cells):
        for i, row in enumerate(batch.rows):
            value = batch.output[i]
            if positions_dim is not None:
                value = value.narrow(positions_dim, 0, int(batch.lengths[i]))
            out[int(row)] = value.clone()
    return out


def padded(cells):
    width = max(len(c) for c in cells)
    ids = torch.zeros(len(cells), width, dtype=torch.long)
    for i, c in enumerate(cells):
        ids[i, : len(c)] = torch.from_numpy(c)
    mask = (torch.arange(width)[None] < torch.tensor([len(c) for c in cells])[:, None]).long()
    return ids, mask


@pytest.mark.parametrize(
    ("model_class", "task"),
    [(BertForSequenceClassification, "cell"), (BertForTokenClassification, "gene")],
)
def test_logits_keep_the_fine_tuned_head(tmp_path, hub_settings, model_class, task):
    torch.manual_seed(0)
    config = tiny_config("V2")
    config.num_labels = 3
    config.id2label = {0: "a", 1: "b", 2: "c"}
    config.label2id = {"a": 0, "b": 1, "c": 2}
    reference = model_class(config).eval()
    reference.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, device=torch.device("cpu"), head=True)
    assert loaded.record.task == f"{task}_classification"
    assert loaded.record.labels == ("a", "b", "c")
    got = run_all(
        Runner(loaded, Logits(loaded), token_budget=40), CELLS, None if task == "cell" else 0
    )
    ids, mask = padded(CELLS)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
    spread = expected.std().item()
    assert spread > 1e-2  # distinct logits: a dropped or re-initialised head would not match
    for i, cell in enumerate(CELLS):
        want = expected[i] if task == "cell" else expected[i, : len(cell)]
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6 * max(1.0, spread))


def test_logits_need_a_head(tmp_path, hub_settings):
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_config("V2")).save_pretrained(tmp_path)
    encoder_only = load_model(tmp_path, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="without a head"):
        Logits(encoder_only)


def test_a_pretrained_checkpoint_keeps_its_mlm_head(tmp_path, hub_settings):
    from transformers import BertForMaskedLM

    from tests._tiny import make_tiny_checkpoint

    folder = make_tiny_checkpoint(tmp_path)
    loaded = load_model(folder, device=torch.device("cpu"), head=True)
    assert loaded.record.task == "masked_lm" and loaded.record.labels is None
    got = run_all(Runner(loaded, Logits(loaded)), CELLS[:1], 0)
    reference = BertForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(CELLS[0])[None]).logits[0]
    assert got[0].shape == (len(CELLS[0]), 20275)
    torch.testing.assert_close(got[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("emb_layer", [0, -1])
@pytest.mark.parametrize("query", ["cls", "mean"])
def test_attention_summary_matches_eager_attentions(tmp_path, hub_settings, emb_layer, query):
    from transformers import BertModel

    from tests._tiny import make_tiny_checkpoint

    folder = make_tiny_checkpoint(tmp_path)
    loaded = load_model(folder, device=torch.device("cpu"))
    got = run_all(Runner(loaded, AttentionSummary(loaded, emb_layer, query=query)), CELLS, 1)
    eager = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = padded(CELLS)
    with torch.no_grad():
        attentions = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    layer = attentions[eager.config.num_hidden_layers + emb_layer - 1]  # (cells, heads, q, k)
    for i, cell in enumerate(CELLS):
        n = len(cell)
        weights = layer[i, :, :n, :n]
        want = weights[:, 0] if query == "cls" else weights.mean(1)
        assert got[i].shape == (eager.config.num_attention_heads, n)
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-6)
        torch.testing.assert_close(got[i].sum(-1), torch.ones(len(want)), rtol=0, atol=1e-5)
    assert np.ptp(got[0].numpy()) > 1e-3  # not uniform: a wrong mask or scale would show


def test_attention_of_the_embedding_layer_is_refused(tmp_path, hub_settings):
    from tests._tiny import make_tiny_checkpoint

    loaded = load_model(make_tiny_checkpoint(tmp_path), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="no attention"):
        AttentionSummary(loaded, -2)
    assert LayerOutput(loaded, -2).encoder is not None  # the embedding output itself is fine
