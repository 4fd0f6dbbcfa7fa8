"""``scgf build-vocab``: the vocabulary the API builds, saved; clear errors, exit status 2."""

from __future__ import annotations

import pickle

import anndata as ad
import pytest

import scgf
from scgf.cli import main
from scgf.vocab import Vocabulary
from tests.conftest import DATA, needs_data

pytestmark = needs_data


def test_build_vocab_writes_the_api_vocabulary(tmp_path, capsys):
    files = [DATA / "pbmc68k_reduced_counts.h5ad", DATA / "pbmc_chr21_10x_v3.h5ad"]
    out = tmp_path / "vocab"
    argv = ["build-vocab", *map(str, files), "--output", str(out), "--gene-key", "ensembl_id"]
    assert main([*argv, "--version", "V1", "--min-cells", "5", "--name", "mine"]) == 0
    assert "written to" in capsys.readouterr().out
    expected = scgf.vocab.build(files, gene_key="ensembl_id", version="V1", min_cells=5)
    loaded = Vocabulary.load(out)
    assert loaded.fingerprint == expected.fingerprint and loaded.name == "mine"
    assert (loaded.version, loaded.context_size) == ("V1", 2048)
    with open(out / "token_dictionary_mine.pkl", "rb") as f:
        assert pickle.load(f) == expected.token_ids
    # The folder works as --model of scgf tokenize.
    tokens = tmp_path / "tokens.h5ad"
    assert (
        main(
            [
                "tokenize",
                str(files[1]),
                str(tokens),
                "--model",
                str(out),
                "--gene-key",
                "ensembl_id",
            ]
        )
        == 0
    )
    params = ad.read_h5ad(tokens).uns["gf_tokens"]["params"]
    assert params["vocabulary_fingerprint"] == expected.fingerprint

    # The output folder already holds a vocabulary: refused before any work, then replaced.
    assert main([*argv, "--method", "tdigest"]) == 2
    assert "already holds a vocabulary" in capsys.readouterr().err
    assert main([*argv, "--method", "tdigest", "--overwrite", "--format", "scgf"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scgf_vocabulary.json"]
    assert Vocabulary.load(out).version == "V2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.h5ad"], "does not exist"),
        (["{data}/pbmc68k_reduced_counts.h5ad"], "have an Ensembl ID"),
    ],
)
def test_build_vocab_reports_errors(args, message, tmp_path, capsys):
    args = [a.format(data=DATA) for a in args]
    assert main(["build-vocab", *args, "--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "scgf build-vocab: error:" in err and message in err
    assert not (tmp_path / "v").exists()
