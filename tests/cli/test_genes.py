"""``scgf finetune-genes`` and ``scgf predict-genes`` on files."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import optuna
import pytest

import scgf
from scgf.cli import main
from tests._tiny import torch_threads
from tests.conftest import needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]

# Marker genes of the pbmc68k cells, as a two-class task (no biology is claimed: the tiny
# random model only has to run).
LABELS = {
    "lymphoid": ["CD3E", "CD3D", "IL7R", "CCR7", "NKG7", "GNLY", "MS4A1", "CD79A"],
    "myeloid": ["LYZ", "CST3", "S100A8", "FCGR3A", "FCER1A", "CD74", "HLA-DRA"],
}


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_finetune_then_predict_genes(model_dir, source, tmp_path, capsys):
    genes = tmp_path / "genes.json"
    genes.write_text(json.dumps(LABELS))
    models, out = tmp_path / "models", tmp_path / "cv.h5ad"
    args = ["--quiet", "finetune-genes", str(source), "--genes", str(genes)]
    args += ["--output-dir", str(models), "--n-folds", "2", "--output", str(out), "--seed", "1"]
    args += ["--model", str(model_dir), "--device", "cpu", "--attention-dropout", "0"]
    assert main(args) == 0
    assert "cross-validated over genes: macro_f1" in capsys.readouterr().out
    result = ad.read_h5ad(out).uns["scgf_finetune_genes"]
    assert set(result["folds"]) == {"0", "1"} and result["params"]["random_state"] == 1
    assert (models / "scgf.json").exists() and (models / "fold_1" / "config.json").exists()
    # trained without attention dropout, and saved so (as tl.finetune saves it)
    saved = json.loads((models / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.0
    assert scgf._train._saved.read_metadata(models)["training_arguments"]["attention_dropout"] == 0

    predicted = tmp_path / "pred.h5ad"
    assert (
        main(["--quiet", "predict-genes", str(source), str(predicted), "--model", str(models)]) == 0
    )
    cells = ad.read_h5ad(predicted)
    expected = ad.read_h5ad(source)
    scgf.tl.predict_genes(expected, model=models)
    np.testing.assert_array_equal(
        cells.varm["scgf_gene_pred_proba"], expected.varm["scgf_gene_pred_proba"]
    )
    assert set(cells.var["scgf_gene_pred"].dropna()) <= set(LABELS)

    # a non-empty output folder is refused, saying what to do
    assert main(args) == 2
    assert "Pass resume=True" in capsys.readouterr().err


def test_bad_label_files_are_refused(source, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": "CD3E"}')
    args = ["finetune-genes", str(source), "--genes", str(bad), "--output-dir", str(tmp_path)]
    assert main(args) == 2
    assert "must hold a JSON object of gene lists" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(args) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_finetune_genes_searches_with_a_space_file(model_dir, source, tmp_path, capsys):
    genes, space = tmp_path / "genes.json", tmp_path / "space.json"
    genes.write_text(json.dumps(LABELS))
    space.write_text(
        json.dumps({"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "seed": [4]})
    )
    models = tmp_path / "models"
    args = ["--quiet", "finetune-genes", str(source), "--genes", str(genes)]
    args += ["--output-dir", str(models), "--n-folds", "2", "--max-folds", "1"]
    args += ["--no-final-model", "--model", str(model_dir), "--device", "cpu"]
    args += ["--attention-dropout", "0"]  # CPU's fused attention: fast
    assert main([*args, "--n-trials", "1", "--search-space", str(space)]) == 0
    assert "trained with the search's best setting" in capsys.readouterr().out
    study = optuna.load_study(
        study_name="scgf_finetune_genes", storage=f"sqlite:///{models}/search.db"
    )
    (trial,) = study.trials
    assert 1e-3 <= trial.params["learning_rate"] <= 1e-2 and trial.params["seed"] == 4
    saved = scgf._train._saved.read_metadata(models / "fold_0")["training_arguments"]
    assert saved["learning_rate"] == trial.params["learning_rate"] and saved["seed"] == 4

    space.write_text(json.dumps({"learning_rate": 1e-3}))
    assert main([*args, "--overwrite", "--n-trials", "1", "--search-space", str(space)]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err
