"""``scgf finetune`` on a file, in one process and in two with torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess

import anndata as ad
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
