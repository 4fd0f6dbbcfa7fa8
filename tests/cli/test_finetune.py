"""``scgf finetune`` on a file, in one process and in two with torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess

import anndata as ad
import numpy as np
import pytest

from scgf.cli import main
from tests.cli.conftest import TORCHRUN_2
from tests.conftest import needs_data, needs_dicts
from tests.tl._finetune_cases import marker_cells, quick_training, tiny_model

pytestmark = [needs_dicts, needs_data]


@pytest.fixture(autouse=True, scope="module")
def fast():
    yield from quick_training()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune_cli")
    model = tiny_model(folder / "base")
    cells, _ = marker_cells(model, n_cells=120)
    cells.write_h5ad(folder / "cells.h5ad")
    return model, folder / "cells.h5ad"


def common(model, source, output_dir, out=None):
    """The command's arguments (the optional output file right after the input)."""
    return [
        "finetune",
        str(source),
        *([str(out)] if out else []),
        "--label-key",
        "marker",
        "--output-dir",
        str(output_dir),
        "--model",
        str(model),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]


def test_finetune_file(files, tmp_path, capsys):
    model, source = files
    out = tmp_path / "out.h5ad"
    args = [
        "--quiet",
        *common(model, source, tmp_path / "m", out),
        "--device",
        "cpu",
        "--training-arg",
        "lr_scheduler_type=cosine",
        "--class-weights",
        "balanced",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "marker: held-out macro-F1" in printed and "results written to" in printed
    result = ad.read_h5ad(out)
    assert set(result.obs["scgf_split"].dropna().unique()) == {"train", "validation", "test"}
    assert result.uns["scgf_finetune"]["params"]["class_weights"] == "balanced"
    meta = json.loads((tmp_path / "m" / "scgf.json").read_text())
    assert meta["training_arguments"]["lr_scheduler_type"] == "cosine"
    assert "scgf_finetune" not in ad.read_h5ad(source).uns  # input untouched
    assert not (tmp_path / "out.h5ad.partial").exists()
    # the same command again: the folder is not empty
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("scgf finetune: error: output_dir ") and "--resume" not in error
    assert len(error.splitlines()) == 1 and "resume=True" in error


def test_bad_label_column_is_one_line(files, tmp_path, capsys):
    model, source = files
    args = ["--quiet", *common(model, source, tmp_path / "m")]
    args[args.index("marker")] = "markr"
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("scgf finetune: error: adata.obs has no label column 'markr'")
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_torchrun_two_cpu_processes(files, tmp_path):
    model, source = files
    out = tmp_path / "dist.h5ad"
    command = [*TORCHRUN_2, "--quiet", *common(model, source, tmp_path / "m", out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = ad.read_h5ad(out)
    metrics = result.uns["scgf_finetune"]["metrics"]["marker"]
    assert metrics["test"]["n"] == 12 and metrics["train"]["n"] == 96  # every cell once
    history = result.uns["scgf_finetune"]["history"]
    assert history["step"].max() == 3  # 96 cells / (2 processes × 16)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "m" / "scgf.json").read_text())["task"] == "cell_classification"


def test_attention_dropout_option(files, tmp_path, capsys):
    model, source = files
    common = ["--quiet", "finetune", str(source), "--label-key", "marker", "--model", str(model)]
    common += ["--epochs", "1", "--device", "cpu"]
    folder = tmp_path / "m"
    assert main([*common, "--output-dir", str(folder), "--attention-dropout", "0.3"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.3  # the base model's is 0
    assert json.loads((folder / "scgf.json").read_text())["training_arguments"][
        "attention_dropout"
    ] == pytest.approx(0.3)
    capsys.readouterr()
    bad = [*common, "--output-dir", str(tmp_path / "bad"), "--attention-dropout", "1"]
    assert main(bad) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("scgf finetune: error: attention_dropout=1.0; give a rate in [0, 1)")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_search_under_torchrun(files, tmp_path):
    import optuna

    from scgf._train._trainer import token_budget_sizes

    model, source = files
    out, folder = tmp_path / "out.h5ad", tmp_path / "m"
    command = [
        *TORCHRUN_2,
        "--quiet",
        "finetune",
        str(source),
        str(out),
        "--label-key",
        "marker",
        "--output-dir",
        str(folder),
        "--model",
        str(model),
        "--batch-tokens",
        "208",  # 8 cells of 26 tokens
        "--n-trials",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = ad.read_h5ad(out)
    uns = result.uns["scgf_finetune"]
    trials = uns["search"]
    assert len(trials) == 2 and set(trials["state"]) == {"COMPLETE"}
    study = optuna.load_study(study_name="scgf_finetune", storage=f"sqlite:///{folder}/search.db")
    assert len(study.trials) == 2
    # the model is saved once (process 0), trained with the study's best setting
    meta = json.loads((folder / "scgf.json").read_text())
    assert meta["search"]["best"] == study.best_trial.params
    for name, value in study.best_trial.params.items():
        assert meta["training_arguments"].get(name, value) == value, name
    assert len(list(folder.glob("*.safetensors"))) == 1 and not (folder / "search").exists()
    # every training cell once per epoch: batches dealt out to the two processes in turn
    train = (result.obs["scgf_split"] == "train").to_numpy()
    lengths = np.diff(result.obsm["gf_tokens"].tocsr().indptr)[train]
    assert uns["metrics"]["marker"]["train"]["n"] == int(train.sum()) == 96
    n_batches = len(token_budget_sizes(lengths, 208))
    assert uns["history"]["step"].max() == math.ceil(n_batches / 2)  # one epoch, 2 processes
