"""scgf.tl.predict equals a plain transformers forward of the classifier, in input order."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import scgf
from tests._tiny import tiny_config
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]

CLASSES = ["T cell", "B cell", "monocyte"]  # not alphabetical: the order must come from id2label


def make_classifier(folder, classes, seed=5, **config_changes):
    torch.manual_seed(seed)
    config = tiny_config("V2")
    if classes is None:
        config.num_labels = 3  # transformers' placeholders LABEL_0..2
    else:
        config.id2label = dict(enumerate(classes))
        config.label2id = {c: i for i, c in enumerate(classes)}
    for name, value in config_changes.items():
        setattr(config, name, value)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenized(vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:100].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    return adata


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenized):
    """A random classifier whose bias is centred on these cells, so each class wins some."""
    folder = make_classifier(tmp_path_factory.mktemp("classifier"), CLASSES)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = torch.stack(
            [
                model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None]).logits[0]
                for ids in scgf.get.tokens(tokenized)[:60]
            ]
        )
        model.classifier.bias -= logits.median(dim=0).values
    model.save_pretrained(folder)
    return folder


def plain_probabilities(folder, adata) -> np.ndarray:
    """Each cell alone, unpadded, through BertForSequenceClassification in fp32."""
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    rows = []
    with torch.no_grad():
        for ids in scgf.get.tokens(adata):
            logits = model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None]).logits
            rows.append(torch.softmax(logits.float(), -1)[0].numpy())
    return np.array(rows)


def test_probabilities_equal_plain_forward_in_input_order(classifier, tokenized):
    adata = tokenized.copy()
    order = np.random.default_rng(0).permutation(adata.n_obs)
    adata = adata[order].copy()  # input order must be kept, whatever the batching
    scgf.tl.predict(adata, model=classifier, batch_tokens=3000, chunk_size=50)
    expected = plain_probabilities(classifier, adata)
    proba = adata.obsm["scgf_pred_proba"]
    assert proba.dtype == np.float32 and proba.shape == (adata.n_obs, 3)
    assert np.abs(proba - expected).max() <= 1e-6
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-6)
    # The labels are the argmax, named by id2label, categories in class-id order.
    pred = adata.obs["scgf_pred"]
    assert list(pred.cat.categories) == CLASSES
    assert pred.astype(str).tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert len(set(pred)) > 1  # the random head does not call every cell the same
    uns = adata.uns["scgf_pred"]
    assert uns["classes"] == {"label": CLASSES}
    assert uns["params"]["task"] == "cell_classification"
    assert uns["params"]["dtype"] == "float32" and len(uns["params"]["sha256"]) == 64


def test_backed_file_chunked_equals_in_memory(classifier, tokenized, tmp_path):
    memory = tokenized.copy()
    scgf.tl.predict(memory, model=classifier)
    path = tmp_path / "cells.h5ad"
    tokenized.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r+")
    scgf.tl.predict(backed, model=classifier, chunk_size=37, batch_tokens=2048)
    backed.file.close()
    again = ad.read_h5ad(path)  # written into the file
    np.testing.assert_allclose(
        again.obsm["scgf_pred_proba"], memory.obsm["scgf_pred_proba"], rtol=0, atol=1e-6
    )
    assert again.obs["scgf_pred"].tolist() == memory.obs["scgf_pred"].tolist()
    assert list(again.obs["scgf_pred"].cat.categories) == CLASSES
    assert dict(again.uns["scgf_pred"]["classes"])["label"].tolist() == CLASSES


def test_tokenizes_on_the_fly_and_empty_cells_are_nan(classifier, tokenized):
    raw = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:30].copy()
    counts = raw.X.toarray()
    counts[4] = 0
    raw.X = type(raw.X)(counts)
    with pytest.warns(UserWarning, match="1 of 30 cells have no tokens"):
        out = scgf.tl.predict(raw, model=classifier, copy=True, key_added="ct")
    assert "ct" not in raw.obs and "gf_tokens" not in raw.obsm  # copy=True: input untouched
    assert np.isnan(out.obsm["ct_proba"][4]).all() and out.obs["ct"].isna().tolist()[4]
    assert not np.isnan(np.delete(out.obsm["ct_proba"], 4, 0)).any()
    keep = np.arange(30) != 4
    expected = plain_probabilities(classifier, out[keep].copy())
    assert np.abs(out.obsm["ct_proba"][keep] - expected).max() <= 1e-6


def test_placeholder_labels_warn(tmp_path, tokenized):
    folder = make_classifier(tmp_path / "labels", None)
    adata = tokenized[:20].copy()
    with pytest.warns(UserWarning, match="names its classes only LABEL_0, LABEL_1, LABEL_2"):
        scgf.tl.predict(adata, model=folder)
    assert list(adata.obs["scgf_pred"].cat.categories) == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_models_without_a_cell_classifier_head_are_refused(tiny_v2, tmp_path, tokenized):
    adata = tokenized[:10].copy()
    with pytest.raises(ValueError, match=r"a pretrained encoder \(masked_lm\).*scgf.tl.embed"):
        scgf.tl.predict(adata, model=tiny_v2)
    torch.manual_seed(0)
    from transformers import BertForTokenClassification

    BertForTokenClassification(tiny_config("V2")).save_pretrained(tmp_path / "genes")
    with pytest.raises(ValueError, match="a gene classifier.*scgf.tl.predict_genes"):
        scgf.tl.predict(adata, model=tmp_path / "genes")
    assert "scgf_pred" not in adata.obs and "scgf_pred" not in adata.uns


def test_refuses_tokens_of_another_vocabulary(tmp_path, vocab_v1):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:10].copy()
    scgf.pp.tokenize(adata, model=vocab_v1, gene_key="ensembl_id")
    folder = make_classifier(tmp_path / "v2", CLASSES)
    with pytest.raises(ValueError, match="V1 tokens of the gc30M vocabulary"):
        scgf.tl.predict(adata, model=folder)
    assert "scgf_pred" not in adata.obs


def test_multitask_model_one_column_per_task(tiny_v2, tokenized, tmp_path):
    from scgf._train._multitask import MultiTaskClassifier

    tasks = {"cell_type": ["T", "B", "NK"], "sex": ["female", "male"]}
    torch.manual_seed(3)
    MultiTaskClassifier.from_backbone(tiny_v2, tasks).save_pretrained(tmp_path / "mt")
    adata = tokenized[:30].copy()
    scgf.tl.predict(adata, model=tmp_path / "mt", key_added="mt")
    model = MultiTaskClassifier.from_pretrained(tmp_path / "mt").eval()
    with torch.no_grad():
        expected = [
            [torch.softmax(x, -1)[0].numpy() for x in model(input_ids=ids[None]).logits]
            for ids in (torch.as_tensor(t, dtype=torch.long) for t in scgf.get.tokens(adata))
        ]
    assert adata.uns["mt"]["classes"] == tasks
    for t, (task, classes) in enumerate(tasks.items()):
        proba = adata.obsm[f"mt_{task}_proba"]
        assert np.abs(proba - np.array([e[t] for e in expected])).max() <= 1e-6
        assert list(adata.obs[f"mt_{task}"].cat.categories) == classes
        assert adata.obs[f"mt_{task}"].astype(str).tolist() == [
            classes[i] for i in proba.argmax(axis=1)
        ]


def interrupt_after_saves(monkeypatch, n_saves: int) -> None:
    """Make PredictionStore.save raise KeyboardInterrupt after its ``n_saves``-th write."""
    from scgf.tl._prediction_store import PredictionStore

    original = PredictionStore.save
    calls = []

    def interrupted(self, gene_state=None):
        original(self, gene_state)
        calls.append(1)
        if len(calls) == n_saves:
            monkeypatch.setattr(PredictionStore, "save", original)
            raise KeyboardInterrupt

    monkeypatch.setattr(PredictionStore, "save", interrupted)


def predict_file(path, **options):
    backed = ad.read_h5ad(path, backed="r+")
    try:
        scgf.tl.predict(backed, **options)
    finally:
        backed.file.close()
    return ad.read_h5ad(path)


def test_interrupted_backed_run_resumes_bitwise(classifier, tokenized, tmp_path, monkeypatch):
    """Saved every batch (zero interval), a run interrupted inside its first chunk resumes
    after the saved cells, forms the same batches and writes exactly the uninterrupted
    result; cells without tokens stay NaN."""
    from scgf.tl._embedding_store import progress_folder
    from scgf.tl._prediction_store import PredictionStore

    cells = tokenized[:40].copy()
    tokens = cells.obsm["gf_tokens"].tolil()
    tokens[7] = 0  # a cell without tokens
    cells.obsm["gf_tokens"] = tokens.tocsr()
    cells.obsm["gf_tokens"].eliminate_zeros()
    whole, cut = tmp_path / "whole.h5ad", tmp_path / "cut.h5ad"
    cells.write_h5ad(whole)
    cells.write_h5ad(cut)
    options = dict(model=classifier, chunk_size=25, batch_tokens=3000)
    with pytest.warns(UserWarning, match="1 of 40 cells have no tokens"):
        expected = predict_file(whole, **options)
    monkeypatch.setattr(scgf.settings, "checkpoint_interval", 0)
    interrupt_after_saves(monkeypatch, 3)
    backed = ad.read_h5ad(cut, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.predict(backed, **options)
    backed.file.close()
    folder = progress_folder(cut, "scgf_pred")
    done = sum(len(np.load(part)["rows"]) for part in folder.glob("part-*.npz"))
    assert 0 < done < 25  # stopped inside the first chunk
    assert "scgf_pred" not in ad.read_h5ad(cut).obs  # nothing written before the end

    added = []
    real_add = PredictionStore.add
    monkeypatch.setattr(
        PredictionStore,
        "add",
        lambda self, rows, v: added.append(len(rows)) or real_add(self, rows, v),
    )
    with pytest.warns(UserWarning, match="1 of 40 cells have no tokens"):
        result = predict_file(cut, **options)
    assert sum(added) == 40 - done  # only the cells after the interruption
    np.testing.assert_array_equal(result.obsm["scgf_pred_proba"], expected.obsm["scgf_pred_proba"])
    assert (
        np.isnan(result.obsm["scgf_pred_proba"][7]).all() and result.obs["scgf_pred"].isna().iloc[7]
    )
    assert result.obs["scgf_pred"].equals(expected.obs["scgf_pred"])
    assert list(result.obs["scgf_pred"].cat.categories) == CLASSES
    assert not folder.exists()  # removed once finished


def test_progress_of_another_model_is_refused(classifier, tokenized, tmp_path, monkeypatch):
    from scgf._resume import ResumeMismatchError

    path = tmp_path / "cells.h5ad"
    tokenized[:20].copy().write_h5ad(path)
    other = make_classifier(tmp_path / "other", CLASSES, seed=11)
    interrupt_after_saves(monkeypatch, 1)
    backed = ad.read_h5ad(path, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.predict(backed, model=classifier, chunk_size=10)
    with pytest.raises(ResumeMismatchError, match=r"sha256 \(saved .*restart=True"):
        scgf.tl.predict(backed, model=other, chunk_size=10)
    scgf.tl.predict(backed, model=other, chunk_size=10, restart=True)
    backed.file.close()
    expected = plain_probabilities(other, tokenized[:20].copy())
    assert np.abs(ad.read_h5ad(path).obsm["scgf_pred_proba"] - expected).max() <= 1e-6
