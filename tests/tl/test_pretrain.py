"""``scgf.tl.pretrain`` on real cells: learning, resuming, continual runs, corpora, bad input."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM, TrainerCallback

import scgf
from scgf._train import TokenDataset
from scgf._train._masked_lm import MaskedOnlyBertForMaskedLM
from scgf.pp import InputDataError
from scgf.tl._pretrain import EmptyCorpusError, OutputDirInUseError
from tests._tiny import tiny_config, torch_threads
from tests.conftest import DATA, needs_data, needs_dicts, sha256

pytestmark = [needs_dicts, needs_data]

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_act="relu",
    max_position_embeddings=4096,
)
QUICK = dict(device="cpu", eval_fraction=0, batch_size=4, warmup_steps=0, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train far faster on one thread (and a busy machine makes more threads
    spin)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def cells():
    return ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")


@pytest.fixture(scope="module")
def small(cells, vocab_v2):
    """40 real cells tokenized with the V2 vocabulary, as a file and in memory."""
    adata = cells[:40].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    return adata


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny V2 checkpoint without dropout (a training step's loss is then deterministic)."""
    torch.manual_seed(7)
    config = tiny_config("V2", hidden=32)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    folder = tmp_path_factory.mktemp("tiny_nodrop")
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


def unigram_entropy(dataset) -> float:
    """Cross-entropy of the best context-free guess: the entropy of the cells' token
    frequencies (masked positions are a uniform sample of them)."""
    ids = np.concatenate([dataset[i]["input_ids"].numpy() for i in range(len(dataset))])
    p = np.bincount(ids) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_pretraining_from_scratch_learns_real_cells(cells, tmp_path, hub_settings):
    # A vocabulary of the data's own genes (scgf.vocab.build), a tiny model from scratch.
    # Cells cut to their top 62 genes (context 64) keep the run short.
    vocab = scgf.vocab.build(
        cells, gene_key="ensembl_id", min_cells=1, context_size=64, name="pbmc68k"
    )
    before = cells.copy()
    out = tmp_path / "model"
    result = scgf.tl.pretrain(
        cells,
        vocab=vocab,
        gene_key="ensembl_id",
        architecture=dict(TINY, max_position_embeddings=vocab.context_size),
        output_dir=out,
        max_steps=150,
        batch_size=16,
        learning_rate=2e-2,
        warmup_steps=0.1,
        eval_fraction=0.1,
        logging_steps=10,
        device="cpu",
        seed=0,
    )
    losses = result["history"]["loss"].dropna().to_numpy()
    assert losses[-1] < losses[0] - 0.3, losses
    # held-out loss below the best context-free guess on the held-out cells
    from scgf.tl._pretrain._corpus import Corpus, split_corpus

    tokens = scgf.pp.tokenize(cells, model=vocab, gene_key="ensembl_id", inplace=False)
    _, held = split_corpus(Corpus(TokenDataset(tokens)), 0.1, seed=0)
    assert result["n_cells"] == {"train": len(cells) - len(held), "eval": len(held)}
    baseline = unigram_entropy(held)
    assert result["eval_loss"] < baseline - 0.05, (result["eval_loss"], baseline)
    assert 0 < result["eval_accuracy"] <= 1
    # the input is unchanged (tokens were made on the side)
    assert list(cells.obsm) == list(before.obsm) and cells.uns.keys() == before.uns.keys()
    # a standard checkpoint, with its vocabulary, usable by the other tools
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    record = scgf.models.resolve(out)
    assert record.vocabulary.fingerprint == vocab.fingerprint and record.task == "masked_lm"
    metadata = json.loads((out / "scgf.json").read_text())
    assert metadata["vocabulary"]["fingerprint"] == vocab.fingerprint
    assert not (out / "corpus_tokens").exists()
    query = cells[:12].copy()
    scgf.pp.tokenize(query, model=out, gene_key="ensembl_id")
    scgf.tl.embed(query, model=out, device="cpu")
    assert query.obsm["X_geneformer"].shape == (12, 32)
    assert np.isfinite(query.obsm["X_geneformer"]).all()


class Interrupt(TrainerCallback):
    """Stops the run like a kill at the start of step ``at`` (after earlier checkpoints)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.at:
            raise KeyboardInterrupt


def weights(folder) -> dict:
    model = BertForMaskedLM.from_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_uninterrupted_weights(small, tmp_path, vocab_v2):
    options = dict(
        QUICK, vocab=vocab_v2, architecture=TINY, max_steps=6, save_steps=3, learning_rate=1e-2
    )
    whole = tmp_path / "whole"
    scgf.tl.pretrain(small, output_dir=whole, **options)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.pretrain(small, output_dir=cut, callbacks=[Interrupt(5)], **options)
    assert (cut / "checkpoint-3").is_dir() and not (cut / "model.safetensors").exists()
    with pytest.raises(OutputDirInUseError, match="resume=True"):
        scgf.tl.pretrain(small, output_dir=cut, **options)
    with pytest.raises(ValueError, match=r"learning_rate \(saved 0.01, now 0.02\)"):
        scgf.tl.pretrain(small, output_dir=cut, resume=True, **{**options, "learning_rate": 2e-2})
    result = scgf.tl.pretrain(small, output_dir=cut, resume=True, **options)
    assert result["global_step"] == 6
    expected, resumed = weights(whole), weights(cut)
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
    fresh = weights(tmp_path / "whole" / "checkpoint-3")
    assert any((fresh[k] - v).abs().max() > 1e-4 for k, v in expected.items())


def record_batches(monkeypatch) -> list[tuple[int, tuple[int, ...]]]:
    """Record every training batch the collator makes: (mask epoch, the cells' indices)."""
    from scgf.tl._pretrain._masking import CellMaskCollator

    seen = []
    collate = CellMaskCollator.__call__

    def recording(self, examples):
        seen.append((self.epoch, tuple(int(e["index"]) for e in examples)))
        return collate(self, examples)

    monkeypatch.setattr(CellMaskCollator, "__call__", recording)
    return seen


def test_resume_across_epochs_gives_the_uninterrupted_weights(
    small, tmp_path, vocab_v2, monkeypatch
):
    # 16 cells in batches of 4: 4 steps per epoch, 3 epochs, a checkpoint every 2 steps.
    corpus = small[:16].copy()
    seen = record_batches(monkeypatch)
    options = dict(
        QUICK, vocab=vocab_v2, architecture=TINY, epochs=3, save_steps=2, learning_rate=1e-2
    )
    whole = tmp_path / "whole"
    assert scgf.tl.pretrain(corpus, output_dir=whole, **options)["global_step"] == 12
    order = list(seen)
    assert len(order) == 12
    # every epoch sees every cell once, masked for that epoch, in its own order
    epochs = [order[4 * e : 4 * e + 4] for e in range(3)]
    for e, batches in enumerate(epochs):
        assert [mask_epoch for mask_epoch, _ in batches] == [e] * 4
        assert sorted(i for _, cells in batches for i in cells) == list(range(16))
    shuffles = [tuple(cells for _, cells in batches) for batches in epochs]
    assert len(set(shuffles)) == 3, shuffles  # a sampler ignoring the epoch repeats its order
    expected = weights(whole)
    # killed at the start of step 5 (last checkpoint: step 4, the end of epoch 1) and of
    # step 7 (checkpoint 6, halfway through epoch 2); both resumed runs end as the whole one
    for at, saved in ((5, 4), (7, 6)):
        cut = tmp_path / f"cut{at}"
        with pytest.raises(KeyboardInterrupt):
            scgf.tl.pretrain(corpus, output_dir=cut, callbacks=[Interrupt(at)], **options)
        assert (cut / f"checkpoint-{saved}").is_dir()
        assert not (cut / f"checkpoint-{saved + 2}").exists()
        seen.clear()
        result = scgf.tl.pretrain(corpus, output_dir=cut, resume=True, **options)
        assert result["global_step"] == 12
        # the resumed run trains the whole run's remaining batches, with the same masks
        assert seen[-(12 - saved) :] == order[saved:], (at, seen)
        resumed = weights(cut)
        for name, value in expected.items():
            torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
    # another seed gives another batch order (a sampler ignoring the seed fails here)
    seen.clear()
    scgf.tl.pretrain(corpus, output_dir=tmp_path / "seed1", **{**options, "seed": 1, "epochs": 1})
    assert tuple(cells for _, cells in seen) != shuffles[0]


def test_continual_pretraining_starts_from_the_checkpoint(
    small, cells, checkpoint, tmp_path, vocab_v2, monkeypatch
):
    # A corpus of two files: one with V2 tokens, one with counts only (tokenized on the fly).
    tokens_file, counts_file = tmp_path / "tokens.h5ad", tmp_path / "counts.h5ad"
    small.write_h5ad(tokens_file)
    cells[40:60].copy().write_h5ad(counts_file)
    hashes = {p: sha256(p) for p in (tokens_file, counts_file)}
    seen = []
    forward = MaskedOnlyBertForMaskedLM.forward

    def recording(self, **inputs):
        out = forward(self, **inputs)
        if self.training and not seen:
            seen.append(({k: v.detach().clone() for k, v in inputs.items()}, out.loss.item()))
        return out

    monkeypatch.setattr(MaskedOnlyBertForMaskedLM, "forward", recording)
    out = tmp_path / "continued"
    result = scgf.tl.pretrain(
        [tokens_file, counts_file],
        model=checkpoint,
        output_dir=out,
        max_steps=2,
        learning_rate=1e-3,
        **{k: v for k, v in QUICK.items() if k != "batch_size"},
        batch_size=8,
    )
    assert result["n_cells"]["train"] == 60
    assert {p: sha256(p) for p in hashes} == hashes  # input files never modified
    # first step: the checkpoint's own loss on that batch (its weights, the full decoder)
    inputs, first_loss = seen[0]
    original = BertForMaskedLM.from_pretrained(checkpoint)
    with torch.no_grad():
        expected = original(**inputs).loss.item()
    assert abs(first_loss - expected) < 1e-5
    record = scgf.models.resolve(out)
    assert record.vocabulary.fingerprint == vocab_v2.fingerprint
    assert json.loads((out / "scgf.json").read_text())["base_model"] == str(checkpoint)
    changed = weights(out)
    assert any((changed[k] - v).abs().max() > 0 for k, v in weights(checkpoint).items())


def test_attention_dropout_reaches_the_trained_layers(small, checkpoint, tmp_path, monkeypatch):
    # The checkpoint has no dropout at all; attention_dropout=0.5 must be set on the layers
    # that train (BERT reads its rates when its layers are built), so the first training
    # step's loss is no longer the deterministic one, and the saved config holds the rate.
    training_losses = []
    forward = MaskedOnlyBertForMaskedLM.forward

    def recording(self, **inputs):
        out = forward(self, **inputs)
        if self.training:
            training_losses.append(out.loss.item())
        return out

    monkeypatch.setattr(MaskedOnlyBertForMaskedLM, "forward", recording)
    first = {}
    for rate in (None, 0.5):
        training_losses.clear()
        out = tmp_path / f"rate{rate}"
        scgf.tl.pretrain(
            small, model=checkpoint, output_dir=out, max_steps=1, attention_dropout=rate, **QUICK
        )
        first[rate] = training_losses[0]
        saved = json.loads((out / "config.json").read_text())["attention_probs_dropout_prob"]
        assert saved == (0.0 if rate is None else rate)
    assert abs(first[0.5] - first[None]) > 1e-3, first
    with pytest.raises(ValueError, match="attention_dropout"):
        scgf.tl.pretrain(
            small, model=checkpoint, output_dir=tmp_path / "bad", attention_dropout=1.5, **QUICK
        )


def test_hugging_face_dataset_corpus(small, checkpoint, tmp_path, hub_settings):
    datasets = pytest.importorskip("datasets")
    rows = scgf.get.tokens(small)
    good = datasets.Dataset.from_dict(
        {"input_ids": [r.tolist() for r in rows], "length": [len(r) for r in rows]}
    )
    folder = tmp_path / "corpus"
    good.save_to_disk(str(folder))
    result = scgf.tl.pretrain(
        folder, model=checkpoint, output_dir=tmp_path / "a", max_steps=1, **QUICK
    )
    assert result["n_cells"]["train"] == len(rows)
    # Genecorpus-30M holds V1 tokens (ids up to 25,425): a V2 model refuses them
    v1_like = datasets.Dataset.from_dict({"input_ids": [[5, 25000, 9]], "length": [3]})
    with pytest.raises(ValueError, match="token id 25000, outside the gc104M vocabulary"):
        scgf.tl.pretrain(v1_like, model=checkpoint, output_dir=tmp_path / "b", **QUICK)
    unwrapped = datasets.Dataset.from_dict({"input_ids": [r[1:-1].tolist() for r in rows]})
    with pytest.raises(ValueError, match="not written <cls> … <eos>"):
        scgf.tl.pretrain(unwrapped, model=checkpoint, output_dir=tmp_path / "c", **QUICK)
    # Opening a dataset checks a sample of cells only (not the whole corpus); a foreign id in
    # a cell outside the sample is refused when that cell is read.
    from scgf.tl._pretrain._corpus import SAMPLE_CELLS, open_corpus

    cells = [r.tolist() for r in rows] * (2 * SAMPLE_CELLS // len(rows) + 1)
    sampled = set(np.linspace(0, len(cells) - 1, SAMPLE_CELLS).astype(int).tolist())
    hidden = min(set(range(len(cells))) - sampled)
    cells[hidden] = [2, 25000, 3]
    mixed = datasets.Dataset.from_dict({"input_ids": cells})
    corpus = open_corpus(
        mixed,
        scgf.models.resolve(checkpoint).vocabulary,
        tokens_key="gf_tokens",
        layer=None,
        gene_key=None,
        chunk_size=8,
        work_dir=tmp_path / "w",
    )
    assert corpus.n_cells == len(cells) and corpus.lengths[hidden] == 3
    assert corpus.dataset[hidden - 1]["input_ids"].tolist() == cells[hidden - 1]
    with pytest.raises(ValueError, match=f"cell {hidden} holds token id 25000, outside"):
        corpus.dataset[hidden]


def test_bad_input_is_refused_and_inputs_stay_unchanged(
    cells, small, checkpoint, tmp_path, vocab_v1
):
    run = dict(model=checkpoint, max_steps=1, **QUICK)
    normalised = cells[:20].copy()
    normalised.X = normalised.X.multiply(1e4 / normalised.X.sum(1)).tocsr()
    path = tmp_path / "normalised.h5ad"
    normalised.write_h5ad(path)
    digest = sha256(path)
    with pytest.raises(InputDataError, match="raw counts"):
        scgf.tl.pretrain(path, output_dir=tmp_path / "n", **run)
    assert sha256(path) == digest
    with pytest.raises(EmptyCorpusError, match="no cell"):
        scgf.tl.pretrain(cells[:0].copy(), output_dir=tmp_path / "e", **run)
    with pytest.raises(EmptyCorpusError, match="empty list"):
        scgf.tl.pretrain([], output_dir=tmp_path / "e2", **run)
    v1_tokens = cells[:10].copy()
    scgf.pp.tokenize(v1_tokens, model=vocab_v1)
    with pytest.raises(ValueError, match="V1 tokens of the gc30M vocabulary"):
        scgf.tl.pretrain(v1_tokens, output_dir=tmp_path / "v", **run)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirInUseError, match="notes.txt"):
        scgf.tl.pretrain(small, output_dir=busy, **run)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not both or neither"):
        scgf.tl.pretrain(small, output_dir=tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="keeps the model's vocabulary"):
        scgf.tl.pretrain(small, output_dir=tmp_path / "x", vocab="V1", **run)
    with pytest.raises(ValueError, match="needs vocab="):
        scgf.tl.pretrain(small, output_dir=tmp_path / "x", architecture="Geneformer-V1-10M")
    with pytest.raises(ValueError, match="Unknown architecture 'V3'"):
        scgf.tl.pretrain(small, output_dir=tmp_path / "x", architecture="V3", vocab="V2")


def test_named_architectures_have_the_published_shapes(vocab_v1, vocab_v2):
    from scgf.tl._pretrain._architectures import architecture_config

    v1 = architecture_config("Geneformer-V1-10M", vocab_v1)
    shape = (v1.num_hidden_layers, v1.hidden_size, v1.num_attention_heads, v1.intermediate_size)
    assert shape == (6, 256, 4, 512)
    assert (v1.vocab_size, v1.max_position_embeddings, v1.hidden_act) == (25426, 2048, "relu")
    v2 = architecture_config("Geneformer-V2-104M", vocab_v2)
    assert (v2.num_hidden_layers, v2.hidden_size, v2.vocab_size) == (12, 768, 20275)
    assert (v2.max_position_embeddings, v2.hidden_dropout_prob) == (4096, 0.1)
    # parameter count of the published V1-10M (spec §3.2: 10.29M)
    with torch.device("meta"):
        n = BertForMaskedLM(v1).num_parameters()
    assert abs(n / 1e6 - 10.29) < 0.01
