"""Fixtures of the command-line tests: a tiny model folder that works offline, and cells."""

from __future__ import annotations

import sys

import anndata as ad
import pytest

from tests._tiny import make_tiny_checkpoint
from tests.conftest import DATA, DICTS

# Two CPU processes (gloo) running the scgf command line.
TORCHRUN_2 = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
    "-m",
    "scgf.cli",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny V2 checkpoint folder carrying the real V2 dictionaries (works offline)."""
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("model"), "V2", seed=3)
    for name in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict"):
        (folder / f"{name}_gc104M.pkl").write_bytes((DICTS / f"{name}_gc95M.pkl").read_bytes())
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:90].copy().write_h5ad(path)
    return path
