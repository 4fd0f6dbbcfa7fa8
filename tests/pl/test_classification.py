"""scgf.pl.confusion_matrix, training_history and roc: the drawn numbers, an image baseline,
and scanpy's plot contract (show/save/ax/return_fig)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from matplotlib.testing.compare import compare_images

import scgf
from scgf._train._metrics import classification_metrics
from tests.get.test_finetune import CELL_TYPES, P_STATUS, STATUS, Y_STATUS, finetuned, predicted

BASELINE = Path(__file__).parent / "_images" / "confusion_matrix.png"


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_confusion_matrix_image_matches_baseline(tmp_path):
    fig = scgf.pl.confusion_matrix(finetuned(), task="cell_type", return_fig=True)
    out = tmp_path / "confusion_matrix.png"
    fig.savefig(out, dpi=60, bbox_inches="tight")
    if not BASELINE.exists():  # pragma: no cover - regenerate with the baseline removed
        out.replace(BASELINE)
        pytest.skip("baseline image written")
    assert compare_images(str(BASELINE), str(out), tol=5) is None


def test_confusion_matrix_values_of_a_run():
    adata = finetuned()
    ax = scgf.pl.confusion_matrix(adata, task="cell_type", show=False)
    # Rows = true class, columns = predicted, in class-id order; rows sum to 1.
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]]) / 2
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == CELL_TYPES
    assert [t.get_text() for t in ax.get_xticklabels()] == CELL_TYPES
    assert "0.50" in [t.get_text() for t in ax.texts]
    ax = scgf.pl.confusion_matrix(
        adata, task="cell_type", split="validation", normalize=False, show=False
    )
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="several tasks"):
        scgf.pl.confusion_matrix(adata, show=False)
    with pytest.raises(KeyError, match="No metrics of split 'train'"):
        scgf.pl.confusion_matrix(adata, task="status", split="train", show=False)


def test_confusion_matrix_of_predictions_against_labels():
    adata = predicted()  # predictions T, B, NaN, NK of cells labelled T, NK, B, NK
    ax = scgf.pl.confusion_matrix(
        adata, label_key="truth", pred_key="scgf_pred", normalize=False, show=False
    )
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert rows == ["B", "NK", "T"] and cols == CELL_TYPES
    counts = pd.DataFrame(ax.images[0].get_array(), index=rows, columns=cols)
    assert counts.loc["T", "T"] == 1 and counts.loc["NK", "B"] == 1 and counts.loc["NK", "NK"] == 1
    assert counts.to_numpy().sum() == 3  # the cell without a prediction is left out


def test_training_history_draws_the_history():
    adata = finetuned()
    fig, ax = plt.subplots()
    assert scgf.pl.training_history(adata, ax=ax, show=False) is ax
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"train_loss", "eval_loss"}
    np.testing.assert_allclose(lines["eval_loss"].get_ydata(), [1.0, 0.8, 0.75])
    np.testing.assert_allclose(lines["eval_loss"].get_xdata(), [1, 2, 3])
    right = next(a for a in fig.axes if a is not ax)
    scores = {line.get_label(): line.get_ydata() for line in right.get_lines()}
    np.testing.assert_allclose(scores["eval_macro_f1"], [0.4, 0.55, 0.6])
    step_ax = scgf.pl.training_history(adata, x="step", scores=[], show=False)
    np.testing.assert_allclose(step_ax.get_lines()[0].get_xdata(), [10, 20, 30])


def test_roc_of_a_two_class_task():
    adata = finetuned()
    ax = scgf.pl.roc(adata, task="status", show=False)
    curve = adata.uns["scgf_finetune"]["metrics"]["status"]["test"]["roc"]
    line = next(line for line in ax.get_lines() if line.get_label().startswith("test"))
    np.testing.assert_allclose(line.get_xdata(), curve["fpr"])
    np.testing.assert_allclose(line.get_ydata(), curve["tpr"])
    assert line.get_label() == "test (AUC = 0.889)"
    with pytest.raises(ValueError, match="two-class tasks; task 'cell_type' has 3 classes"):
        scgf.pl.roc(adata, task="cell_type", show=False)


def test_roc_of_cross_validated_folds_mean_and_band():
    rng = np.random.default_rng(0)
    folds = []
    for _ in range(3):
        p1 = np.clip(P_STATUS[:, 1] + rng.normal(0, 0.2, 6), 0, 1)
        folds.append(classification_metrics(Y_STATUS, np.column_stack([1 - p1, p1]), STATUS))
    adata = ad.AnnData(np.zeros((2, 2)))
    # The layout scgf.tl.finetune_genes writes: folds keyed "0", "1", ….
    adata.uns["scgf_finetune_genes"] = {
        "classes": STATUS,
        "folds": {str(i): f for i, f in enumerate(folds)},
        "params": {},
    }
    ax = scgf.pl.roc(adata, key="scgf_finetune_genes", show=False)
    mean = next(line for line in ax.get_lines() if line.get_label().startswith("mean"))
    expected = np.mean([f["roc"]["tpr"] for f in folds], axis=0)
    np.testing.assert_allclose(mean.get_ydata(), expected)
    aucs = [f["roc_auc"] for f in folds]
    assert f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}" in mean.get_label()
    band = ax.collections[0].get_paths()[0].vertices  # the ± 1 sd band: upper edge at 0.5
    sd = np.std([f["roc"]["tpr"] for f in folds], axis=0, ddof=1)
    assert len(ax.collections) == 1
    assert np.isclose(band[:, 1], min(1, expected[50] + sd[50])).any()
    assert len([line for line in ax.get_lines() if line.get_alpha() == 0.3]) == 3


def test_save_and_return_fig(tmp_path):
    sc.settings.figdir = tmp_path
    adata = finetuned()
    scgf.pl.confusion_matrix(adata, task="cell_type", save=".png", show=False)
    scgf.pl.training_history(adata, save=True, show=False)
    scgf.pl.roc(adata, task="status", save="_status.png", show=False)
    assert (tmp_path / "confusion_matrix.png").exists()
    assert (tmp_path / "training_history.pdf").exists()
    assert (tmp_path / "roc_status.png").exists()
    assert isinstance(scgf.pl.roc(adata, task="status", return_fig=True), plt.Figure)
