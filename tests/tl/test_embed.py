"""scgf.tl.embed equals a direct transformers computation of the reference, in input order."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import scgf
from tests._reference_embedder import reference_embeddings
from tests._tiny import tiny_config
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


def assert_matches(actual, expected) -> None:
    """Equal to within 1e-6 of the embeddings' scale (absolute where values are within ±1)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.isnan(actual).tolist() == np.isnan(expected).tolist()
    scale = max(1.0, float(np.nanmax(np.abs(expected))))
    assert np.nanmax(np.abs(actual - expected)) <= 1e-6 * scale


@pytest.fixture
def cells(vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:150].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    return adata


@pytest.mark.parametrize("layer", [-1, 0])
def test_v2_matches_reference(tiny_v2, cells, layer):
    ref_cls, ref_mean, ref_genes = reference_embeddings(tiny_v2, cells, layer=layer)
    scgf.tl.embed(cells, model=tiny_v2, emb_layer=layer, genes=True, batch_tokens=3000)
    assert_matches(cells.obsm["X_geneformer"], ref_cls)
    scgf.tl.embed(cells, model=tiny_v2, emb_layer=layer, pooling="mean", key_added="mean")
    assert_matches(cells.obsm["mean"], ref_mean)
    var_tokens = cells.var_names.map(lambda g: g)  # symbols → tokens through the vocabulary
    tokens = scgf.models.get_vocabulary("V2").map_genes(np.asarray(var_tokens))
    gene_emb = cells.varm["X_geneformer"]
    n_checked = 0
    for i, tok in enumerate(tokens):
        if tok in ref_genes:
            assert_matches(gene_emb[i], ref_genes[tok])
            n_checked += 1
        else:
            assert np.isnan(gene_emb[i]).all()
    assert n_checked > 300


def test_v1_matches_reference(tiny_v1, vocab_v1):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:120].copy()
    scgf.pp.tokenize(adata, model=vocab_v1, gene_key="ensembl_id")
    _, ref_mean, _ = reference_embeddings(tiny_v1, adata, special=False)
    scgf.tl.embed(adata, model=tiny_v1)
    assert adata.uns["X_geneformer"]["params"]["pooling"] == "mean"
    assert_matches(adata.obsm["X_geneformer"], ref_mean)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("version", "shape"),
    [("V2", dict(hidden=512, layers=12, heads=8)), ("V1", dict(hidden=256, layers=6, heads=4))],
    ids=["gf-12L-95M-i4096", "Geneformer-V1-10M"],
)
def test_real_shapes_match_reference(tmp_path, version, shape, vocab_v1, vocab_v2):
    torch.manual_seed(0)
    config = tiny_config(version, hidden=shape["hidden"], layers=shape["layers"])
    config.num_attention_heads = shape["heads"]
    config.intermediate_size = 2 * shape["hidden"]
    config.initializer_range = 0.02  # BERT's own scale for a real-width model
    from transformers import BertForMaskedLM

    BertForMaskedLM(config).save_pretrained(tmp_path)
    vocab = vocab_v2 if version == "V2" else vocab_v1
    adata = ad.read_h5ad(DATA / "pbmc_ifnb_kang2018_2000.h5ad")[:12].copy()
    scgf.pp.tokenize(adata, model=vocab)
    ref_cls, ref_mean, _ = reference_embeddings(tmp_path, adata, special=version == "V2")
    scgf.tl.embed(adata, model=tmp_path)
    expected = ref_cls if version == "V2" else ref_mean
    assert_matches(adata.obsm["X_geneformer"], expected)


def test_params_order_and_empty_cells(tiny_v2, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:40].copy()
    counts = adata.X.toarray()
    counts[5] = 0
    adata.X = type(adata.X)(counts)
    with pytest.warns(UserWarning, match="1 of 40 cells"):
        scgf.tl.embed(adata, model=tiny_v2)  # tokenizes on the fly
    emb = adata.obsm["X_geneformer"]
    assert emb.dtype == np.float32 and emb.shape == (40, 16)
    assert np.isnan(emb[5]).all() and not np.isnan(np.delete(emb, 5, 0)).any()
    params = adata.uns["X_geneformer"]["params"]
    assert params["emb_layer"] == -1 and params["pooling"] == "cls" and params["dtype"] == "float32"
    assert len(params["sha256"]) == 64
    # Input order: a shuffled copy gives the same rows, shuffled.
    order = np.random.default_rng(0).permutation(40)
    shuffled = adata[order].copy()
    scgf.tl.embed(shuffled, model=tiny_v2)
    assert_matches(shuffled.obsm["X_geneformer"], emb[order])


def test_loaded_fine_tuned_model_uses_its_encoder(tiny_v2, cells):
    classifier = BertForSequenceClassification.from_pretrained(tiny_v2, num_labels=3)
    scgf.tl.embed(cells, model=classifier, key_added="from_classifier")
    scgf.tl.embed(cells, model=tiny_v2)
    assert_matches(cells.obsm["from_classifier"], cells.obsm["X_geneformer"])


def test_refuses_tokens_of_another_vocabulary(tiny_v1, cells):
    with pytest.raises(ValueError, match="V2 tokens of the gc104M vocabulary"):
        scgf.tl.embed(cells, model=tiny_v1)
    assert "X_geneformer" not in cells.obsm


def test_bad_options(tiny_v1, tiny_v2, cells):
    with pytest.raises(ValueError, match=r"emb_layer=-5 is outside \[-2, 0\]"):
        scgf.tl.embed(cells, model=tiny_v2, emb_layer=-5)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        scgf.tl.embed(cells, model=tiny_v2, quantize="8bit", device="cpu")
    with pytest.raises(ValueError, match="pooling='cls' needs a V2 model"):
        scgf.tl.embed(cells, model=tiny_v1, pooling="cls")
    assert "X_geneformer" not in cells.obsm


def test_copy(tiny_v2, cells):
    out = scgf.tl.embed(cells, model=tiny_v2, copy=True)
    assert "X_geneformer" in out.obsm and "X_geneformer" not in cells.obsm


def interrupt_after_saves(monkeypatch, n_saves: int) -> None:
    """Make EmbeddingStore.save raise KeyboardInterrupt after its ``n_saves``-th write."""
    from scgf.tl._embedding_store import EmbeddingStore

    original = EmbeddingStore.save
    calls = []

    def interrupted(self, gene_state=None):
        original(self, gene_state)
        calls.append(1)
        if len(calls) == n_saves:
            monkeypatch.setattr(EmbeddingStore, "save", original)
            raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddingStore, "save", interrupted)


def test_backed_file_written_and_resumed(tiny_v2, cells, tmp_path, monkeypatch):
    expected = scgf.tl.embed(cells, model=tiny_v2, genes=True, copy=True)
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)

    from scgf._engine import Runner

    monkeypatch.setattr(scgf.settings, "checkpoint_interval", 3600)  # save per chunk only
    interrupt_after_saves(monkeypatch, 2)
    backed = ad.read_h5ad(path, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.embed(backed, model=tiny_v2, genes=True, chunk_size=40)
    backed.file.close()

    resumed_from = []
    real_run = Runner.run

    def counting_run(self, tokens, **kwargs):
        resumed_from.append(tokens.shape[0])
        return real_run(self, tokens, **kwargs)

    monkeypatch.setattr(Runner, "run", counting_run)
    backed = ad.read_h5ad(path, backed="r+")
    scgf.tl.embed(backed, model=tiny_v2, genes=True, chunk_size=40)
    backed.file.close()
    assert sum(resumed_from) == 150 - 80  # only the cells after the interruption
    result = ad.read_h5ad(path)
    assert_matches(result.obsm["X_geneformer"], expected.obsm["X_geneformer"])
    assert_matches(result.varm["X_geneformer"], expected.varm["X_geneformer"])
    assert result.uns["X_geneformer"]["params"]["pooling"] == "cls"
    from scgf.tl._embedding_store import progress_folder

    assert not progress_folder(path, "X_geneformer").exists()  # removed once finished


def test_progress_saved_by_time_resumes_bitwise(tiny_v2, cells, tmp_path, monkeypatch):
    """With a zero interval every batch is saved; a run interrupted mid-chunk resumes with the
    same batches and gives exactly the uninterrupted result."""
    whole, cut = tmp_path / "whole.h5ad", tmp_path / "cut.h5ad"
    cells.write_h5ad(whole)
    cells.write_h5ad(cut)
    options = dict(model=tiny_v2, genes=True, chunk_size=100, batch_tokens=1500)
    backed = ad.read_h5ad(whole, backed="r+")
    scgf.tl.embed(backed, **options)
    backed.file.close()
    monkeypatch.setattr(scgf.settings, "checkpoint_interval", 0)
    interrupt_after_saves(monkeypatch, 3)  # three batches of the first chunk
    backed = ad.read_h5ad(cut, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.embed(backed, **options)
    backed.file.close()
    from scgf.tl._embedding_store import progress_folder

    parts = sorted(progress_folder(cut, "X_geneformer").glob("part-*.npz"))
    done = sum(len(np.load(part)["rows"]) for part in parts)
    assert len(parts) == 3 and 0 < done < 100  # stopped inside the first chunk
    states = list(progress_folder(cut, "X_geneformer").glob("state-*.npz"))
    assert [p.name for p in states] == ["state-000002.npz"]  # gene sums kept once, not per part
    backed = ad.read_h5ad(cut, backed="r+")
    scgf.tl.embed(backed, **options)
    backed.file.close()
    a, b = ad.read_h5ad(whole), ad.read_h5ad(cut)
    np.testing.assert_array_equal(a.obsm["X_geneformer"], b.obsm["X_geneformer"])
    np.testing.assert_array_equal(a.varm["X_geneformer"], b.varm["X_geneformer"])


def test_progress_of_another_run_is_refused(tiny_v2, cells, tmp_path, monkeypatch):
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    interrupt_after_saves(monkeypatch, 1)
    backed = ad.read_h5ad(path, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.embed(backed, model=tiny_v2, chunk_size=40)
    with pytest.raises(ValueError, match=r"emb_layer \(saved -1, now 0\).*restart=True"):
        scgf.tl.embed(backed, model=tiny_v2, chunk_size=40, emb_layer=0)
    scgf.tl.embed(backed, model=tiny_v2, chunk_size=40, emb_layer=0, restart=True)
    backed.file.close()
    assert ad.read_h5ad(path).uns["X_geneformer"]["params"]["emb_layer"] == 0


def test_rows_are_signed_for_evaluate(tiny_v2, cells):
    # tl.evaluate refuses an embedding whose rows no longer belong to the cells; embed
    # records what it needs to tell.
    from scgf.tl._evaluate._provenance import check_signature

    adata = cells.copy()
    scgf.tl.embed(adata, model=tiny_v2)
    signature = adata.uns["X_geneformer"]["rows"]
    values = adata.obsm["X_geneformer"]
    assert check_signature(signature, adata.obs_names, values)[0] == "verified"
    subset = adata[::-3]  # a reordered subset keeps its own rows
    assert check_signature(signature, subset.obs_names, subset.obsm["X_geneformer"])[0] == (
        "verified"
    )
    shuffled = values[np.random.default_rng(0).permutation(adata.n_obs)]
    assert check_signature(signature, adata.obs_names, shuffled)[0] == "mismatch"
