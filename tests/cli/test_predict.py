"""``scgf predict`` on files: the same predictions as ``scgf.tl.predict``, clean failures."""

from __future__ import annotations

import os
import subprocess

import anndata as ad
import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import scgf
from scgf.cli import EXIT_USER_ERROR, main
from tests._tiny import tiny_config
from tests.cli.conftest import TORCHRUN_2
from tests.conftest import DATA, DICTS, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


def classifier_folder(folder):
    """A tiny V2 cell classifier carrying the real V2 dictionaries (works offline)."""
    torch.manual_seed(7)
    config = tiny_config("V2")
    config.id2label = {0: "lymphoid", 1: "myeloid"}
    config.label2id = {"lymphoid": 0, "myeloid": 1}
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict"):
        (folder / f"{name}_gc104M.pkl").write_bytes((DICTS / f"{name}_gc95M.pkl").read_bytes())
    return folder


def test_predict_file_round_trip(tmp_path, capsys):
    source = tmp_path / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:40].copy().write_h5ad(source)
    model = classifier_folder(tmp_path / "model")
    out = tmp_path / "out.h5ad"
    args = ["--quiet", "predict", str(source), str(out), "--model", str(model)]
    assert main([*args, "--chunk-size", "15", "--key-added", "lineage"]) == 0
    assert "predictions written to" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    expected = ad.read_h5ad(source)
    scgf.tl.predict(expected, model=model, key_added="lineage")
    np.testing.assert_allclose(
        result.obsm["lineage_proba"], expected.obsm["lineage_proba"], rtol=0, atol=1e-6
    )
    assert result.obs["lineage"].tolist() == expected.obs["lineage"].tolist()
    assert list(result.obs["lineage"].cat.categories) == ["lymphoid", "myeloid"]
    assert result.obsm["gf_tokens"].shape[0] == result.n_obs  # tokenized on the way
    assert "lineage" not in ad.read_h5ad(source).obs  # input untouched


def test_model_without_head_is_one_line_and_no_output(source, model_dir, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    status = main(["--quiet", "predict", str(source), str(out), "--model", str(model_dir)])
    assert status == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("scgf predict: error: ") and "pretrained encoder" in err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.h5ad.partial").exists()


@pytest.fixture(scope="module")
def few_cells(tmp_path_factory):
    path = tmp_path_factory.mktemp("few") / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:30].copy().write_h5ad(path)
    return path


def test_interrupted_predict_resumes_and_restart_discards(few_cells, tmp_path, capsys, monkeypatch):
    from tests.tl.test_predict import interrupt_after_saves

    source = few_cells
    model = classifier_folder(tmp_path / "model")
    whole, out = tmp_path / "whole.h5ad", tmp_path / "out.h5ad"
    options = ["--model", str(model), "--batch-tokens", "3000", "--chunk-size", "20"]
    assert main(["--quiet", "predict", str(source), str(whole), *options]) == 0
    argv = ["--quiet", "predict", str(source), str(out), *options, "--checkpoint-interval", "0"]
    interrupt_after_saves(monkeypatch, 2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "out.h5ad.partial" in err and "run the same command again to resume" in err
    assert not out.exists() and (tmp_path / "out.h5ad.partial.scgf_pred.progress").is_dir()

    assert main([*argv, "--dtype", "bfloat16"]) == 2  # other parameters: refused, not mixed
    err = capsys.readouterr().err
    assert "dtype (saved 'float32', now 'bfloat16')" in err and "--restart" in err

    assert main(argv) == 0
    assert "resuming the interrupted run" in capsys.readouterr().out
    a, b = ad.read_h5ad(whole), ad.read_h5ad(out)
    np.testing.assert_array_equal(b.obsm["scgf_pred_proba"], a.obsm["scgf_pred_proba"])
    assert b.obs["scgf_pred"].equals(a.obs["scgf_pred"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.h5ad", "whole.h5ad"]

    interrupt_after_saves(monkeypatch, 1)
    assert main([*argv, "--key-added", "again"]) == 130
    assert main([*argv, "--key-added", "again", "--dtype", "bfloat16", "--restart"]) == 0
    result = ad.read_h5ad(out)
    assert result.uns["again"]["params"]["dtype"] == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.h5ad", "whole.h5ad"]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(few_cells, tmp_path):
    source = few_cells
    model = classifier_folder(tmp_path / "model")
    options = ["--model", str(model), "--device", "cpu", "--chunk-size", "10"]
    single, dist = tmp_path / "single.h5ad", tmp_path / "dist.h5ad"
    assert main(["--quiet", "predict", str(source), str(single), *options]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN_2, "--quiet", "predict", str(source), str(dist), *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = ad.read_h5ad(single), ad.read_h5ad(dist)
    np.testing.assert_allclose(b.obsm["scgf_pred_proba"], a.obsm["scgf_pred_proba"], atol=1e-6)
    assert not np.isnan(b.obsm["scgf_pred_proba"]).any()  # both halves merged
    assert b.obs["scgf_pred"].equals(a.obs["scgf_pred"])
    assert (b.obsm["gf_tokens"] != a.obsm["gf_tokens"]).nnz == 0
    assert dict(b.uns["scgf_pred"]["classes"])["label"].tolist() == ["lymphoid", "myeloid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.h5ad", "model", "single.h5ad"]


@pytest.mark.slow
def test_killed_predict_resumes_bitwise(tmp_path):
    """SIGKILL at a random moment around saves, then run again: the output equals an
    uninterrupted run's, bit for bit, with nothing left behind."""
    from tests.cli.test_fault_injection import parts, run_to_completion

    source = tmp_path / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:200].copy().write_h5ad(source)
    model = classifier_folder(tmp_path / "model")
    options = ["--model", str(model), "--batch-tokens", "800", "--checkpoint-interval", "0"]
    whole, out = tmp_path / "whole.h5ad", tmp_path / "out.h5ad"
    assert main(["--quiet", "predict", str(source), str(whole), *options]) == 0
    progress = parts(tmp_path / "out.h5ad.partial.scgf_pred.progress")
    argv = ["predict", str(source), str(out), *options]
    saved = run_to_completion(argv, progress, np.random.default_rng(2), kills=1)
    assert len(saved) == 1 and saved[-1] > 0, saved  # each kill came after progress was saved
    a, b = ad.read_h5ad(whole), ad.read_h5ad(out)
    np.testing.assert_array_equal(b.obsm["scgf_pred_proba"], a.obsm["scgf_pred_proba"])
    assert b.obs["scgf_pred"].equals(a.obs["scgf_pred"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cells.h5ad",
        "model",
        "out.h5ad",
        "whole.h5ad",
    ]
