"""``scgf evaluate``: a file in, the table printed, results in the output file and a CSV."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from scgf.cli import EXIT_USER_ERROR, main

pytest.importorskip("scib_metrics")


def test_round_trip(tmp_path, capsys):
    from tests.tl.test_evaluate import FAST, WIDTH, synthetic

    source, out, csv = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "table.csv"
    synthetic().write_h5ad(source)
    argv = ["--quiet", "evaluate", str(source), str(out), "--label-key", "cell_type"]
    argv += ["--batch-key", "batch", "--reps", "X_geneformer"]
    argv += ["--n-comps", str(WIDTH), "--skip-metrics", *FAST, "probe", "--table", str(csv)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "X_geneformer" in printed and "iLISI" in printed and "Total" in printed
    table = pd.read_csv(csv)
    assert set(table["embedding"]) == {"X_geneformer"} and "probe" not in set(table["group"])
    written = ad.read_h5ad(out)
    stored = written.uns["scgf_evaluate"]["results"]
    pd.testing.assert_frame_equal(stored.reset_index(drop=True), table, check_dtype=False)
    assert written.uns["scgf_evaluate"]["params"]["batch_key"] == "batch"
    assert "scgf_evaluate" not in ad.read_h5ad(source).uns  # the input is not changed
    assert not list(tmp_path.glob("*.partial"))


def test_bad_label_is_one_line(tmp_path, capsys):
    from tests.tl.test_evaluate import synthetic

    source = tmp_path / "in.h5ad"
    synthetic(n=60).write_h5ad(source)
    assert main(["evaluate", str(source), "--label-key", "tissue"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "scgf evaluate: error: label_key='tissue' is not an obs column" in err
    assert "Traceback" not in err
