"""``scgf attention`` on a file, in one process and split across two with torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

import scgf
from scgf.cli import main
from scgf.tl import _attention_kernels
from tests._tiny import torch_threads
from tests.cli.conftest import TORCHRUN_2
from tests.conftest import needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]
OPTIONS = ["--min-cells", "1", "--top-k", "20", "--device", "cpu"]

# One torchrun process: tl.attention with the sparse gene-pair accumulator, written by rank 0.
SPARSE_WORKER = """
import sys
import anndata as ad
import scgf
from scgf.tl import _attention_kernels

_attention_kernels.DENSE_MAX_GENES = 0
source, model, out = sys.argv[1:]
adata = ad.read_h5ad(source)
scgf.settings.progress = False
scgf.tl.attention(adata, model=model, min_cells=1, top_k=20, device="cpu")
from scgf._engine._distributed import world
if world()[0] == 0:
    adata.write_h5ad(out)
"""


def in_memory(source, model_dir, **options) -> ad.AnnData:
    adata = ad.read_h5ad(source)
    with torch_threads(1):
        scgf.tl.attention(adata, model=model_dir, min_cells=1, top_k=20, device="cpu", **options)
    return adata


@pytest.fixture(scope="module")
def expected(model_dir, source):
    return in_memory(source, model_dir)


def assert_same_attention(got: ad.AnnData, expected: ad.AnnData) -> None:
    key = "scgf_attention"
    a, b = got.layers[key], expected.layers[key]
    assert a.nnz == b.nnz > 1000
    np.testing.assert_allclose(a.toarray(), b.toarray(), rtol=0, atol=1e-6)
    for name in (key, f"{key}_n_cells"):
        a, b = got.varp[name], expected.varp[name]
        assert (a != 0).nnz == (b != 0).nnz > 1000
        np.testing.assert_allclose(a.toarray(), b.toarray(), rtol=0, atol=1e-6)


def test_attention_file_equals_in_memory(expected, model_dir, source, tmp_path):
    out = tmp_path / "out.h5ad"
    with torch_threads(1):
        code = main(["--quiet", "attention", str(source), str(out), "--model", str(model_dir)])
    assert code == 0
    # the defaults (min-cells 3, top-k 50) differ from the fixture's: compare per-cell only
    np.testing.assert_allclose(
        ad.read_h5ad(out).layers["scgf_attention"].toarray(),
        expected.layers["scgf_attention"].toarray(),
        rtol=0,
        atol=1e-6,
    )
    out2 = tmp_path / "out2.h5ad"
    with torch_threads(1):
        code = main(
            ["--quiet", "attention", str(source), str(out2), "--model", str(model_dir), *OPTIONS]
        )
    assert code == 0
    assert_same_attention(ad.read_h5ad(out2), expected)
    untouched = ad.read_h5ad(source)
    assert "scgf_attention" not in untouched.layers and "gf_tokens" not in untouched.obsm


def test_heads_option_and_bad_heads(model_dir, source, tmp_path, capsys):
    out = tmp_path / "heads.h5ad"
    args = ["--quiet", "attention", str(source), str(out), "--model", str(model_dir)]
    with torch_threads(1):
        assert main([*args, "--heads", "1", "--no-gene-pairs", "--key-added", "h1"]) == 0
    written = ad.read_h5ad(out)
    assert list(written.uns["h1"]["params"]["heads"]) == [1]
    assert "h1" in written.layers and "h1" not in written.varp
    assert main([*args, "--heads", "first"]) == 2
    assert "give 'mean', 'all', or head numbers" in capsys.readouterr().err
    assert main([*args, "--heads", "7"]) == 2
    assert "numbered 0 to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not an option of attention: argparse refuses it
        main([*args, "--pooling", "cls"])
    assert "unrecognized arguments: --pooling" in capsys.readouterr().err
    missing = tmp_path / "no_such_folder" / "out.h5ad"
    assert main(["--quiet", "attention", str(source), str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(expected, model_dir, source, tmp_path):
    out = tmp_path / "dist.h5ad"
    command = [*TORCHRUN_2, "--quiet", "attention", str(source), str(out)]
    command += ["--model", str(model_dir), *OPTIONS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = ad.read_h5ad(out)
    assert merged.uns["scgf_attention"]["params"]["pair_accumulator"] == "dense"
    assert_same_attention(merged, expected)


@pytest.mark.slow
def test_sparse_pairs_under_torchrun_equal_one(model_dir, source, tmp_path, monkeypatch):
    monkeypatch.setattr(_attention_kernels, "DENSE_MAX_GENES", 0)
    expected = in_memory(source, model_dir)
    assert expected.uns["scgf_attention"]["params"]["pair_accumulator"] == "sparse"
    worker, out = tmp_path / "worker.py", tmp_path / "sparse.h5ad"
    worker.write_text(SPARSE_WORKER)
    command = [*TORCHRUN_2[:-2], str(worker), str(source), str(model_dir), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = ad.read_h5ad(out)
    assert merged.uns["scgf_attention"]["params"]["pair_accumulator"] == "sparse"
    assert_same_attention(merged, expected)
