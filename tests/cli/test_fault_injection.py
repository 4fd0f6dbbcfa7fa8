"""Fault injection: ``scgf embed`` and ``scgf perturb`` killed with SIGKILL at random moments,
run again each time, end with outputs bitwise identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pytest

from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data, pytest.mark.slow]
SCGF = [sys.executable, "-m", "scgf.cli", "--quiet"]


def run_to_completion(argv: list[str], progress, rng, kills: int) -> list[int]:
    """Run ``argv`` again and again until a run finishes; the first ``kills`` runs are killed
    (SIGKILL) at a random moment after they saved 1–3 more parts (``progress()`` counts
    them), up to 0.2 s later, so kills land between and during saves. Returns the number of
    saved parts after each kill."""
    saved = []
    for attempt in range(kills + 1):
        process = subprocess.Popen(
            SCGF + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy()
        )
        if attempt < kills:
            target = progress() + int(rng.integers(1, 4))
            while process.poll() is None and progress() < target:
                time.sleep(0.01)
            if process.poll() is None:
                time.sleep(float(rng.uniform(0, 0.2)))
                process.send_signal(signal.SIGKILL)
                process.wait()
                saved.append(progress())
                continue
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()
        return saved
    raise AssertionError("unreachable")


def parts(folder):
    return lambda: len(list(folder.glob("part-*.npz")))


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:300].copy().write_h5ad(path)
    return path


def test_killed_embed_resumes_bitwise(model_dir, cells, tmp_path):
    options = ["--model", str(model_dir), "--genes", "--batch-tokens", "800"]
    options += ["--checkpoint-interval", "0"]
    subprocess.run([*SCGF, "embed", str(cells), str(tmp_path / "whole.h5ad"), *options], check=True)
    out = tmp_path / "out.h5ad"
    progress = parts(tmp_path / "out.h5ad.partial.X_geneformer.progress")
    argv = ["embed", str(cells), str(out), *options]
    saved = run_to_completion(argv, progress, np.random.default_rng(0), kills=3)
    assert len(saved) == 3 and saved[-1] > 0, saved  # each kill came after progress was saved
    whole, resumed = ad.read_h5ad(tmp_path / "whole.h5ad"), ad.read_h5ad(out)
    np.testing.assert_array_equal(resumed.obsm["X_geneformer"], whole.obsm["X_geneformer"])
    np.testing.assert_array_equal(resumed.varm["X_geneformer"], whole.varm["X_geneformer"])
    assert (resumed.obsm["gf_tokens"] != whole.obsm["gf_tokens"]).nnz == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad", "whole.h5ad"]  # no debris


def test_killed_perturb_resumes_bitwise(model_dir, cells, tmp_path):
    # One gene group: a copy per cell, so the 300 cells make ~38 saved blocks of 8 cells.
    options = ["--model", str(model_dir), "--genes", "CD74", "--gene-shifts"]
    subprocess.run(
        [*SCGF, "perturb", str(cells), str(tmp_path / "whole.h5ad"), *options], check=True
    )
    out = tmp_path / "out.h5ad"
    argv = ["perturb", str(cells), str(out), *options, "--resume", str(tmp_path / "ckpt")]
    progress = parts(tmp_path / "ckpt")
    saved = run_to_completion(argv, progress, np.random.default_rng(1), kills=3)
    assert len(saved) == 3 and saved[-1] > 0, saved  # each kill came after progress was saved
    whole, resumed = ad.read_h5ad(tmp_path / "whole.h5ad"), ad.read_h5ad(out)
    assert resumed.obsm["scgf_perturb"].equals(whole.obsm["scgf_perturb"])  # per-cell scores
    for table in ("results", "gene_shifts"):
        a, b = resumed.uns["scgf_perturb"][table], whole.uns["scgf_perturb"][table]
        assert a.equals(b), table
