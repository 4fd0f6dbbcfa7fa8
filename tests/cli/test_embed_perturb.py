"""``scgf embed`` on files, in one process and split across two with torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess

import anndata as ad
import numpy as np
import pytest

import scgf
from scgf.cli import main
from tests._tiny import torch_threads
from tests.cli.conftest import TORCHRUN_2
from tests.conftest import needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


# Perturb monocytes toward dendritic cells.
STATES = [
    "--state-key",
    "cell_type",
    "--start-state",
    "CD14+ Monocyte",
    "--goal-state",
    "Dendritic",
]


@pytest.fixture(scope="module")
def single(model_dir, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out.h5ad"
    args = ["--quiet", "embed", str(source), str(out), "--model", str(model_dir), "--genes"]
    assert main(args) == 0
    return ad.read_h5ad(out)


def test_embed_file_tokenizes_and_embeds(single, model_dir, source):
    assert single.obsm["gf_tokens"].shape == (90, 4096)
    assert single.obsm["X_geneformer"].shape == (90, 16)
    assert single.varm["X_geneformer"].shape == (single.n_vars, 16)
    expected = ad.read_h5ad(source)
    scgf.tl.embed(expected, model=model_dir)
    np.testing.assert_allclose(
        single.obsm["X_geneformer"], expected.obsm["X_geneformer"], rtol=1e-5, atol=1e-6
    )
    assert "X_geneformer" not in ad.read_h5ad(source).obsm  # input untouched


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(single, model_dir, source, tmp_path):
    out = tmp_path / "dist.h5ad"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        *TORCHRUN_2,
        "--quiet",
        "embed",
        str(source),
        str(out),
        "--model",
        str(model_dir),
        "--genes",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = ad.read_h5ad(out)
    np.testing.assert_allclose(
        merged.obsm["X_geneformer"], single.obsm["X_geneformer"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        merged.varm["X_geneformer"], single.varm["X_geneformer"], rtol=1e-5, atol=1e-6
    )
    assert (merged.obsm["gf_tokens"] != single.obsm["gf_tokens"]).nnz == 0


def test_perturb_file(model_dir, source, tmp_path):
    out = tmp_path / "perturbed.h5ad"
    args = [
        "--quiet",
        "perturb",
        str(source),
        str(out),
        "--model",
        str(model_dir),
        "--max-cells",
        "2",
        *STATES,
        "--resume",
        str(tmp_path / "ckpt"),
    ]
    assert main(args) == 0
    result = ad.read_h5ad(out)
    table = scgf.get.perturb_df(result)
    assert set(table["state"]) == {"Dendritic", "CD14+ Monocyte"}
    assert (
        result.layers["scgf_perturb"].nnz
        == table.loc[table["state"] == "Dendritic", "n_cells"].sum()
    )
    # Running the same command again resumes from the finished checkpoint.
    assert main(args) == 0
    again = scgf.get.perturb_df(ad.read_h5ad(out))
    np.testing.assert_allclose(again["mean_shift"], table["mean_shift"])


def test_perturb_precision_and_batch_options(model_dir, source, tmp_path):
    out = tmp_path / "bf16.h5ad"
    common = ["--quiet", "perturb", str(source), str(out), "--model", str(model_dir)]
    common += ["--max-cells", "1", "--batch-tokens", "400"]
    assert main([*common, "--dtype", "bfloat16"]) == 0
    bf16 = ad.read_h5ad(out)
    assert bf16.uns["scgf_perturb"]["params"]["dtype"] == "bfloat16"
    assert main(common) == 0
    fp32 = ad.read_h5ad(out)
    assert fp32.uns["scgf_perturb"]["params"]["dtype"] == "float32"
    a, b = bf16.layers["scgf_perturb"], fp32.layers["scgf_perturb"]
    assert (a != 0).nnz == (b != 0).nnz > 100
    np.testing.assert_allclose(a.data, b.data, atol=1e-2)  # bf16 is close, not equal
    assert not np.array_equal(a.data, b.data)


@pytest.mark.slow
def test_perturb_under_torchrun_equals_one_process(model_dir, source, tmp_path):
    args = [
        "--quiet",
        "perturb",
        str(source),
        "OUT",
        "--model",
        str(model_dir),
        "--max-cells",
        "4",
        *STATES,
        "--device",
        "cpu",
    ]
    single = tmp_path / "single.h5ad"
    # One thread, like each torchrun process: another thread count rounds matmuls differently,
    # and 1e-7 differences can swap close scores' ranks, which moves rank-sum p-values.
    with torch_threads(1):
        assert main([a if a != "OUT" else str(single) for a in args]) == 0
    merged = tmp_path / "merged.h5ad"
    command = [
        *TORCHRUN_2,
        *[a if a != "OUT" else str(merged) for a in args],
        "--resume",
        str(tmp_path / "ckpt"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a = scgf.get.perturb_df(ad.read_h5ad(single)).sort_values(["state", "gene"])
    b = scgf.get.perturb_df(ad.read_h5ad(merged)).sort_values(["state", "gene"])
    assert list(a["gene"]) == list(b["gene"]) and list(a["n_cells"]) == list(b["n_cells"])
    for column in ("mean_shift", "pvalue"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["rank0-of-2", "rank1-of-2"]
