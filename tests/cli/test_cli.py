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
    assert code == 2
    assert "No var column 'x'" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit):
        main(["nonsense"])


def test_model_options_use_geneformer_names(capsys):
    from scgf.cli import build_parser

    args = build_parser().parse_args(["embed", "a.h5ad", "b.h5ad", "--emb-layer", "0"])
    assert args.emb_layer == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embed", "a.h5ad", "b.h5ad", "--layer", "0"])
    assert "unrecognized arguments: --layer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "a.h5ad", "b.h5ad", "--batch-tokens", "0"],
        ["perturb", "a.h5ad", "b.h5ad", "--max-cells", "-5"],
        ["tokenize", "a.h5ad", "b.h5ad", "--chunk-size", "0"],
        ["tokenize", "a.h5ad", "b.h5ad", "--chunk-size", "many"],
    ],
)
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "is not a whole number" in err


def test_perturb_states_from_the_command_line_equal_the_api_form():
    from scgf.cli import _perturb, build_parser

    args = build_parser().parse_args(
        ["perturb", "a", "b", "--state-key", "ct", "--start-state", "x", "--goal-state", "y"]
    )
    assert _perturb.state_argument(args) == {"key": "ct", "start": "x", "goal": "y"}
    assert _perturb.gene_argument(args) == "all"


def test_module_entry_point_runs(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "scgf.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "embed" in out and "perturb" in out and "tokenize" in out
