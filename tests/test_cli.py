"""The scgf command line, against the loopback hub."""

from __future__ import annotations

import anndata as ad
import pytest

import scgf
from scgf.cli import main
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


def test_models_lists_checkpoints(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Geneformer-V2-104M" in out and "gf-12L-95M-i4096_CLcancer" in out


def test_fetch_vocabulary_only(hub_settings, capsys):
    assert main(["--quiet", "fetch", "--vocabulary-only", "Geneformer-V1-10M"]) == 0
    assert "gc30M dictionaries" in capsys.readouterr().out


def test_tokenize_file_downloads_only_dictionaries(hub, hub_settings, tmp_path, vocab_v2):
    source = DATA / "pbmc68k_reduced_counts.h5ad"
    out = tmp_path / "out.h5ad"
    n_requests = len(hub.requests)
    assert (
        main(
            [
                "--quiet",
                "tokenize",
                str(source),
                str(out),
                "--model",
                "Geneformer-V2-104M",
                "--chunk-size",
                "100",
            ]
        )
        == 0
    )
    assert not any("safetensors" in r for r in hub.requests[n_requests:])
    result = ad.read_h5ad(out)
    expected = scgf.pp.tokenize(ad.read_h5ad(source), model=vocab_v2, inplace=False)
    assert (result.obsm["gf_tokens"] != expected).nnz == 0
    assert "gf_tokens" not in ad.read_h5ad(source).obsm  # input untouched


def test_tokenize_reports_errors(hub_settings, tmp_path, capsys):
    source = DATA / "pbmc68k_reduced_counts.h5ad"
    code = main(["--quiet", "tokenize", str(source), str(tmp_path / "o.h5ad"), "--gene-key", "x"])
    assert code == 1
    assert "No var column 'x'" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit):
        main(["nonsense"])
