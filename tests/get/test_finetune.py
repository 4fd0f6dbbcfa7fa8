"""scgf.get: fine-tuning metrics, history and predictions as tidy tables.

The fine-tuning results are built by hand in the layout ``scgf.tl.finetune`` writes
(``uns["scgf_finetune"]``: tasks, per-split ``classification_metrics``, history), from known
labels and probabilities, so the numbers in the tables are known.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scgf
from scgf._train._metrics import classification_metrics

CELL_TYPES = ["T", "B", "NK"]
STATUS = ["healthy", "sick"]
# Test split of the three-class task: 6 cells, 4 right (accuracy 2/3).
Y_TYPE = np.array([0, 0, 1, 1, 2, 2])
P_TYPE = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.7 + 0.1
# Two-class task: 6 cells, one healthy cell ranked above a sick one.
Y_STATUS = np.array([0, 0, 0, 1, 1, 1])
P1 = np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
P_STATUS = np.column_stack([1 - P1, P1])


def finetuned() -> ad.AnnData:
    adata = ad.AnnData(np.zeros((6, 2), dtype=np.float32))
    metrics = {
        "cell_type": {
            "validation": classification_metrics(Y_TYPE[:3], P_TYPE[:3], CELL_TYPES),
            "test": classification_metrics(Y_TYPE, P_TYPE, CELL_TYPES),
        },
        "status": {"test": classification_metrics(Y_STATUS, P_STATUS, STATUS)},
    }
    history = pd.DataFrame(
        {
            "epoch": [1.0, 2.0, 3.0],
            "step": [10, 20, 30],
            "train_loss": [1.1, 0.7, 0.5],
            "eval_loss": [1.0, 0.8, 0.75],
            "eval_accuracy": [0.5, 0.6, 0.66],
            "eval_macro_f1": [0.4, 0.55, 0.6],
        }
    )
    adata.uns["scgf_finetune"] = {
        "params": {"model": "tiny"},
        "tasks": {"cell_type": CELL_TYPES, "status": STATUS},
        "metrics": metrics,
        "history": history,
        "output_dir": "out",
    }
    return adata


def predicted() -> ad.AnnData:
    proba = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [np.nan] * 3, [0.2, 0.3, 0.5]], dtype=np.float32
    )
    adata = ad.AnnData(np.zeros((4, 2), dtype=np.float32))
    adata.obs_names = ["c0", "c1", "c2", "c3"]
    adata.obs["scgf_pred"] = pd.Categorical.from_codes([0, 1, -1, 2], categories=CELL_TYPES)
    adata.obs["truth"] = ["T", "NK", "B", "NK"]
    adata.obsm["scgf_pred_proba"] = proba
    adata.uns["scgf_pred"] = {"classes": {"cell_type": CELL_TYPES}, "params": {}}
    return adata


def test_metrics_table_has_the_known_numbers():
    table = scgf.get.finetune_metrics_df(finetuned())
    assert list(table.columns) == ["task", "split", "metric", "value"]
    value = table.set_index(["task", "split", "metric"])["value"]
    assert value["cell_type", "test", "accuracy"] == pytest.approx(4 / 6)
    assert value["cell_type", "test", "n"] == 6
    assert value["cell_type", "validation", "accuracy"] == pytest.approx(2 / 3)
    # macro-F1 of the test split by hand: T (1/2 right, 1 false +): P=1/2,R=1/2; B: P=2/3,R=1;
    # NK: P=1,R=1/2.
    f1 = np.mean([0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5])
    assert value["cell_type", "test", "macro_f1"] == pytest.approx(f1)
    # ROC AUC only for the two-class task: 8 of 9 sick/healthy pairs ordered right.
    assert value["status", "test", "roc_auc"] == pytest.approx(8 / 9)
    assert ("cell_type", "test", "roc_auc") not in value.index


def test_metrics_of_cross_validated_folds():
    adata = ad.AnnData(np.zeros((2, 2)))
    folds = [classification_metrics(Y_STATUS, P_STATUS, STATUS)] * 2
    adata.uns["scgf_finetune_genes"] = {"classes": STATUS, "folds": folds, "params": {}}
    table = scgf.get.finetune_metrics_df(adata, key="scgf_finetune_genes")
    assert sorted(table["split"].unique()) == ["fold0", "fold1"]
    assert table.query("metric == 'roc_auc'")["value"].tolist() == pytest.approx([8 / 9] * 2)


def test_history_is_a_copy():
    adata = finetuned()
    history = scgf.get.training_history_df(adata)
    pd.testing.assert_frame_equal(history, adata.uns["scgf_finetune"]["history"])
    history.loc[0, "eval_loss"] = 99
    assert adata.uns["scgf_finetune"]["history"].loc[0, "eval_loss"] == 1.0


def test_predictions_table(tmp_path):
    predicted().write_h5ad(tmp_path / "p.h5ad")
    adata = ad.read_h5ad(tmp_path / "p.h5ad")  # as a user reads a scgf predict output
    table = scgf.get.predictions_df(adata, label_key="truth")
    assert table["cell"].tolist() == ["c0", "c1", "c2", "c3"]
    assert table["task"].unique().tolist() == ["cell_type"]
    assert table["prediction"].astype(object).tolist()[:2] == ["T", "B"]
    assert pd.isna(table["prediction"][2]) and table["prediction"][3] == "NK"
    np.testing.assert_allclose(table["probability"], [0.7, 0.8, np.nan, 0.5], rtol=1e-6)
    assert table["correct"].tolist()[:2] == [True, False]
    assert pd.isna(table["correct"][2]) and table["correct"][3]
    long = scgf.get.predictions_df(adata, proba=True)
    assert long.shape == (12, 4) and list(long.columns) == ["cell", "task", "class", "probability"]
    row = long[(long["cell"] == "c3") & (long["class"] == "B")]
    assert row["probability"].item() == pytest.approx(0.3)


def test_missing_results_say_what_to_run():
    empty = ad.AnnData(np.zeros((2, 2)))
    with pytest.raises(KeyError, match=r"run scgf.tl.finetune\(adata, ...\) first"):
        scgf.get.finetune_metrics_df(empty)
    with pytest.raises(KeyError, match=r"run scgf.tl.predict\(adata, model=..., key_added="):
        scgf.get.predictions_df(empty)
    with pytest.raises(KeyError, match="label_key='nope' is not an obs column"):
        scgf.get.predictions_df(predicted(), label_key="nope")
