"""load_model and Logits on multi-task folders and LoRA adapter folders (merged), and the
tools accepting an adapter folder as model=."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

import scgf
from scgf._engine import Logits, Runner, load_model
from scgf._train import MultiTaskClassifier
from tests._heads import TASKS, adapter_folder, padded, tiny_folder
from tests.conftest import DATA, needs_data

pytestmark = pytest.mark.usefixtures("hub_settings")
CPU = torch.device("cpu")
CELLS = [
    np.array([2, *range(100, 130), 3]),
    np.array([2, *range(500, 511), 3]),
    np.array([2, 9, 3]),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("base"), seed=7)


def run_logits(loaded):
    """Logits of every cell of CELLS through the runner (length-bucketed, padded batches)."""
    out = {}
    for batch in Runner(loaded, Logits(loaded), token_budget=40).run(CELLS):
        for i, row in enumerate(batch.rows):
            if isinstance(batch.output, dict):
                out[int(row)] = {t: x[i].clone() for t, x in batch.output.items()}
            else:
                out[int(row)] = batch.output[i].clone()
    return out


def direct_logits(model):
    with torch.no_grad():
        return [model(input_ids=padded([c.tolist()])[0]).logits for c in CELLS]


def test_multitask_folder_head_and_encoder(tmp_path, base):
    model = MultiTaskClassifier.from_backbone(base, TASKS, pooling="attention").eval()
    with torch.no_grad():
        for head in model.heads.values():
            head.bias.normal_()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, device=CPU, head=True)
    assert isinstance(loaded.model, MultiTaskClassifier)
    assert loaded.record.task == "multitask_cell_classification"
    got, expected = run_logits(loaded), direct_logits(model)
    for i, logits in enumerate(expected):
        assert list(got[i]) == list(TASKS)
        for task, x in zip(TASKS, logits, strict=True):
            torch.testing.assert_close(got[i][task], x[0], atol=1e-6, rtol=0)
    encoder = load_model(tmp_path, device=CPU).model
    assert type(encoder).__name__ == "BertModel"
    for name, value in model.bert.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name


@pytest.mark.parametrize("kind", ["cell", "multitask"])
def test_adapter_logits_equal_the_peft_forward(tmp_path, base, kind):
    folder, lora = adapter_folder(tmp_path / "adapter", base, kind)
    expected = direct_logits(lora)
    loaded = load_model(folder, device=CPU, head=True)
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())
    got = run_logits(loaded)
    for i, logits in enumerate(expected):
        if kind == "cell":
            torch.testing.assert_close(got[i], logits[0], atol=1e-6, rtol=0)
            continue
        for task, x in zip(TASKS, logits, strict=True):
            torch.testing.assert_close(got[i][task], x[0], atol=1e-6, rtol=0)
    # Not the base model's numbers: the adapter changed the encoder.
    merged = loaded.encoder.encoder.layer[0].attention.self.query.weight
    plain = load_model(base, device=CPU).encoder.encoder.layer[0].attention.self.query.weight
    assert (merged - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="merged into full-precision weights"):
        load_model(folder, device=CPU, quantize="8bit")


@needs_data
def test_embed_accepts_an_adapter_folder(tmp_path, base, vocab_v2):
    folder, lora = adapter_folder(tmp_path / "adapter", base)
    cells = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:30].copy()
    scgf.pp.tokenize(cells, model=vocab_v2)
    scgf.tl.embed(cells, model=folder, key_added="from_adapter")
    merged = lora.merge_and_unload()
    scgf.tl.embed(cells, model=merged, key_added="from_merged")
    scgf.tl.embed(cells, model=base, key_added="from_base")
    got, expected = cells.obsm["from_adapter"], cells.obsm["from_merged"]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert np.abs(got - cells.obsm["from_base"]).max() > 1e-3
    params = cells.uns["from_adapter"]["params"]
    assert params["model"] == str(folder) and params["base_model"] == str(base)
