"""scgf.tl.finetune_genes / predict_genes: a constructed gene task a tiny model must learn (and
fails to learn when the labels are shifted by one position), saved folds that load in plain
transformers with the same logits, exact averaged predictions, resuming, and bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForTokenClassification, BertForMaskedLM

import scgf
from scgf._train import _data
from scgf.pp._rank_encoding import tokens_to_csr
from tests._tiny import tiny_config, torch_threads
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]

N_CELLS, SLOTS, REAL = 150, 6, 24
FAST = dict(
    n_folds=3,
    final_model=False,
    epochs=3,
    learning_rate=5e-3,
    device="cpu",
    training_args=dict(save_strategy="no", logging_strategy="no"),
)


def constructed_task(vocab):
    """Real cells (their top-ranked genes) led by 6 "odd" genes at positions 1, 3, … 11 and 6
    "even" genes at positions 2, 4, … 12 (30 genes per class, drawn per cell): a gene's class
    is visible at its token only through its position, so a model trained on some genes
    classifies held-out ones. Labels moved by one position teach every gene the other class."""
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:N_CELLS].copy()
    scgf.pp.tokenize(adata, model=vocab)
    cells = scgf.get.tokens(adata)
    present = np.unique(np.concatenate(cells))
    gene_tokens = np.array([vocab.token_ids[g] for g in vocab.gene_ids[:2000]])
    pool = np.setdiff1d(gene_tokens, present)
    odd, even = pool[:30], pool[30:60]
    rng = np.random.default_rng(0)
    rows = []
    for cell in cells:
        a = rng.choice(odd, SLOTS, replace=False)
        b = rng.choice(even, SLOTS, replace=False)
        body = np.stack([a, b], 1).ravel()
        rows.append(np.concatenate([[vocab.cls_id], body, cell[1:-1][:REAL], [vocab.eos_id]]))
    lengths = np.array([len(r) for r in rows])
    adata.obsm["gf_tokens"] = tokens_to_csr(lengths, np.concatenate(rows).astype(np.int32), 4096)
    labels = {"odd": list(vocab.id_of_token[odd]), "even": list(vocab.id_of_token[even])}
    return adata, labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A 32-wide model trains fastest on one thread (and far faster on a busy machine).
    with torch_threads(1):
        yield


def save_tiny_base(folder):
    """A random 32-wide V2-shaped ``BertForMaskedLM`` (BERT's initialisation) in ``folder``."""
    torch.manual_seed(0)
    config = tiny_config("V2", hidden=32)
    config.initializer_range = 0.02
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_v2):
    return save_tiny_base(tmp_path_factory.mktemp("tiny_gene_base"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, vocab_v2):
    adata, labels = constructed_task(vocab_v2)
    output = tmp_path_factory.mktemp("genes") / "model"
    scgf.tl.finetune_genes(adata, labels, model=tiny_model, output_dir=output, **FAST)
    return adata, labels, output


def test_constructed_task_is_learned(trained):
    adata, _, _ = trained
    result = adata.uns["scgf_finetune_genes"]
    assert set(result["folds"]) == {"0", "1", "2"}
    for fold in result["folds"].values():
        assert fold["roc_auc"] >= 0.95, fold
        assert fold["n_genes"] == {"train": 40, "validation": 10, "test": 10}
        assert len(fold["roc"]["fpr"]) == len(fold["roc"]["tpr"]) == 100
        assert fold["token_level"]["n"] > fold["n"]  # every occurrence vs every gene
    assert result["metrics"]["roc_auc"]["mean"] >= 0.95
    assert result["metrics"]["macro_f1"]["mean"] >= 0.9
    genes = result["genes"]
    assert len(genes) == 60 and genes["fold"].between(0, 2).all()
    assert (genes["predicted"] == genes["label"]).mean() >= 0.9


def test_labels_shifted_by_one_position_are_not_learned(
    tmp_path, tiny_model, vocab_v2, monkeypatch
):
    # The alignment bug the test above must catch: each label one position late (as if the
    # <cls> offset were applied twice).
    getitem = _data.TokenDataset.__getitem__

    def shifted(self, item):
        example = getitem(self, item)
        example["labels"] = torch.roll(example["labels"], 1)
        return example

    monkeypatch.setattr(_data.TokenDataset, "__getitem__", shifted)
    adata, labels = constructed_task(vocab_v2)
    scgf.tl.finetune_genes(adata, labels, model=tiny_model, output_dir=tmp_path, **FAST)
    auc = adata.uns["scgf_finetune_genes"]["metrics"]["roc_auc"]["mean"]
    assert auc < 0.2, auc  # each gene learned as the other class


def _by_hand(folder, tokens, special_tokens=True):
    """Every cell alone through plain transformers (fp32, no padding), softmax, then each
    gene's probabilities averaged over the cells that hold it."""
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    sums, counts = {}, {}
    with torch.no_grad():
        for row in tokens:
            proba = torch.softmax(model(input_ids=torch.from_numpy(row)[None]).logits[0], -1)
            genes = slice(1, len(row) - 1) if special_tokens else slice(None)
            for tok, p in zip(row[genes].tolist(), proba[genes].double(), strict=True):
                sums[tok] = sums.get(tok, 0) + p
                counts[tok] = counts.get(tok, 0) + 1
    return {t: (sums[t] / counts[t]).numpy() for t in sums}, counts


def test_saved_fold_predicts_exactly_in_plain_transformers(trained, vocab_v2):
    adata, _, output = trained
    folder = output / "fold_0"
    meta = scgf._train._saved.read_metadata(folder)
    assert meta["task"] == "gene_classification" and meta["tasks"] == {
        "gene_class": ["odd", "even"]
    }
    cells = adata[:60].copy()
    scgf.tl.predict_genes(cells, model=folder, batch_tokens=700)
    expected, counts = _by_hand(folder, scgf.get.tokens(cells))
    # var genes: real pbmc genes; the constructed genes are not variables, so check tokens
    # through the table of every vocabulary token the cells hold.
    per_var = cells.varm["scgf_gene_pred_proba"]
    n_cells = cells.var["scgf_gene_pred_n_cells"].to_numpy()
    var_tok = vocab_v2.map_genes(np.asarray(cells.var_names))
    checked = 0
    for i, tok in enumerate(var_tok):
        if tok in expected:
            np.testing.assert_allclose(per_var[i], expected[tok], atol=1e-6, rtol=0)
            assert n_cells[i] == counts[tok]
            checked += 1
        else:
            assert n_cells[i] == 0 and np.isnan(per_var[i]).all()
            assert cells.var["scgf_gene_pred"].isna().iloc[i]
    assert checked > 100
    table = scgf.get.gene_predictions_df(cells)
    assert len(table) == checked and list(table.columns[-2:]) == ["odd", "even"]
    assert (table["n_cells"] > 0).all()


def test_held_out_probabilities_are_the_saved_folds_predictions(trained, vocab_v2):
    # Held-out genes are evaluated on every cell that holds them, so the fold's stored
    # probabilities must equal the saved fold model's averaged predictions.
    adata, _, output = trained
    genes = adata.uns["scgf_finetune_genes"]["genes"]
    held = genes[genes["fold"] == 1]
    expected, counts = _by_hand(output / "fold_1", scgf.get.tokens(adata))
    for _, row in held.iterrows():
        got = row[["proba_odd", "proba_even"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, expected[row["token"]], atol=1e-6, rtol=0)
        assert row["n_cells"] == counts[row["token"]]


def test_results_survive_h5ad_and_resume_reads_finished_folds(trained, tiny_model, tmp_path):
    adata, labels, output = trained
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["scgf_finetune_genes"]
    first = adata.uns["scgf_finetune_genes"]
    assert back["metrics"]["roc_auc"]["mean"] == first["metrics"]["roc_auc"]["mean"]
    again = adata.copy()
    # every fold is finished: nothing is trained again, the same results come back
    scgf.tl.finetune_genes(again, labels, model=tiny_model, output_dir=output, resume=True, **FAST)
    assert again.uns["scgf_finetune_genes"]["metrics"] == first["metrics"]
    with pytest.raises(ValueError, match=r"learning_rate"):
        scgf.tl.finetune_genes(
            adata.copy(),
            labels,
            model=tiny_model,
            output_dir=output,
            resume=True,
            **{**FAST, "learning_rate": 1e-3},
        )
    with pytest.raises(ValueError, match="is not empty"):
        scgf.tl.finetune_genes(adata.copy(), labels, model=tiny_model, output_dir=output, **FAST)


def test_predict_genes_refuses_a_model_without_a_gene_head(tiny_model, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:5].copy()
    with pytest.raises(ValueError, match="not a gene classifier"):
        scgf.tl.predict_genes(adata, model=tiny_model)
    assert "gf_tokens" not in adata.obsm


def _bad_cases(vocab):
    genes = list(vocab.gene_ids)
    some = ["CD3E", "CD74", "LYZ", "NKG7", "GNLY", "MS4A1", "CD79A", "FCGR3A", "S100A8"]
    unexpressed = genes[:12]  # early Ensembl IDs absent from these cells
    return {
        "few genes": (
            {"a": some[:3], "b": some[3:]},
            r"'a' has 3 \(each class needs at least n_folds=5",
        ),
        "two classes": (
            {"a": some[:5], "b": [*some[4:], "ENSG00000019582"]},
            r"2 gene\(s\) are labelled with two or more classes: CD74 \(a, b\); GNLY \(a, b\)",
        ),
        "no token": ({"a": ["NOTAGENE1", "xyz"], "b": ["FOO"]}, "None of the 3 labelled genes"),
        "no cell": (
            {"a": unexpressed[:6], "b": unexpressed[6:]},
            "No cell expresses any of the 12 labelled genes",
        ),
    }


@pytest.mark.parametrize("case", ["few genes", "two classes", "no token", "no cell"])
def test_bad_labels_leave_adata_unchanged(case, tmp_path, tiny_model, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:40].copy()
    if case == "no cell":
        keep = ~np.isin(
            vocab_v2.map_genes(np.asarray(adata.var_names)),
            [vocab_v2.token_ids[g] for g in vocab_v2.gene_ids[:12]],
        )
        adata = adata[:, keep].copy()
    before = adata.copy()
    labels, message = _bad_cases(vocab_v2)[case]
    with pytest.raises(ValueError, match=message):
        scgf.tl.finetune_genes(adata, labels, model=tiny_model, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for slot in ("obsm", "uns", "varm", "layers"):
        assert set(getattr(adata, slot)) == set(getattr(before, slot)), slot
    assert adata.var.equals(before.var) and adata.obs.equals(before.obs)


def test_labels_from_a_var_column(tmp_path, tiny_model, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:40].copy()
    adata.var["kind"] = pd.Series(np.nan, index=adata.var_names, dtype=object)
    adata.var.loc[["CD3E", "CD74", "LYZ"], "kind"] = "x"
    adata.var.loc[["NKG7", "GNLY", "MS4A1", "CD79A", "FCGR3A", "S100A8"], "kind"] = "y"
    with pytest.raises(ValueError, match="'x' has 3"):
        scgf.tl.finetune_genes(
            adata, var_key="kind", model=tiny_model, output_dir=tmp_path, n_folds=5
        )
    with pytest.raises(ValueError, match="gene_labels=.* or var_key="):
        scgf.tl.finetune_genes(adata, model=tiny_model, output_dir=tmp_path)
