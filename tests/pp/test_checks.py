"""Tokenization refuses non-human genes with the evidence, and says which column it read."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgf
from scgf.pp import InputDataError
from tests.conftest import DATA, needs_data, needs_dicts, real_datasets

pytestmark = [needs_dicts, needs_data]


@pytest.fixture
def pbmc():
    return ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")


def mouse_style(names: pd.Index) -> pd.Index:
    """Symbols as mouse genes are written: ``HES4`` → ``Hes4``."""
    return pd.Index([name.capitalize() for name in names])


def test_mouse_capitalised_symbols_are_refused(pbmc, vocab_v2):
    pbmc.var_names = mouse_style(pbmc.var_names)
    # Upper-cased, most of them are human symbols: the overlap alone would let them through.
    assert (vocab_v2.map_genes(pbmc.var_names) >= 0).mean() > 0.9
    with pytest.raises(InputDataError) as info:
        scgf.pp.tokenize(pbmc, model=vocab_v2)
    message = str(info.value)
    assert "var_names" in message and "mouse" in message
    assert "of 765 identifiers" in message and "'Hes4'" in message
    assert "orthologs" in message and "gene_key=" in message
    assert "gf_tokens" not in pbmc.obsm


def test_mouse_column_is_named_and_a_human_column_suggested(pbmc, vocab_v2):
    pbmc.var["mouse_symbol"] = mouse_style(pbmc.var_names).to_numpy()
    with pytest.raises(InputDataError) as info:
        scgf.pp.tokenize(pbmc, model=vocab_v2, gene_key="mouse_symbol")
    message = str(info.value)
    assert "var['mouse_symbol']" in message
    assert "gene_key='ensembl_id'" in message and "gene_key=None for var_names" in message


def test_upper_cased_on_purpose_is_accepted(pbmc, vocab_v2):
    # The documented way out: upper-case the symbols when they really are human genes.
    pbmc.var_names = mouse_style(pbmc.var_names).str.upper()
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    assert "gf_tokens" in pbmc.obsm


@pytest.mark.parametrize(
    ("prefix", "species"),
    [("ENSRNOG", "rat"), ("ENSDARG", "zebrafish"), ("ENSMUSG", "mouse")],
)
def test_other_species_ensembl_ids_name_the_species(vocab_v2, prefix, species):
    ids = [f"{prefix}{i:011d}" for i in range(200)]
    adata = ad.AnnData(sp.csr_matrix(np.ones((3, 200), np.float32)), var=pd.DataFrame(index=ids))
    with pytest.raises(InputDataError, match=rf"Only 0 of 200 genes.*{species}") as info:
        scgf.pp.tokenize(adata, model=vocab_v2)
    assert f"'{prefix}00000000000'" in str(info.value) and "orthologs" in str(info.value)


def test_fly_ids_are_named(vocab_v2):
    ids = [f"FBgn{i:07d}" for i in range(100)]
    adata = ad.AnnData(sp.csr_matrix(np.ones((3, 100), np.float32)), var=pd.DataFrame(index=ids))
    with pytest.raises(InputDataError, match=r"fly.*'FBgn0000000'"):
        scgf.pp.tokenize(adata, model=vocab_v2)


def test_info_line_names_the_column_used(pbmc, vocab_v2, capsys):
    scgf.settings.verbosity = "info"
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "gene identifiers" in line)
    assert "var_names" in line and "'ensembl_id'" in line and "gene_key=" in line
    scgf.pp.tokenize(pbmc, model=vocab_v2, gene_key="ensembl_id")
    line = next(line for line in capsys.readouterr().err.splitlines() if "gene identif" in line)
    assert "var['ensembl_id']" in line


def test_single_identifier_source_logs_nothing_extra(vocab_v2, capsys):
    scgf.settings.verbosity = "info"
    ids = ["CD3E", "ACTB", "HES4", "CD19"]
    adata = ad.AnnData(sp.csr_matrix(np.ones((2, 4), np.float32)), var=pd.DataFrame(index=ids))
    scgf.pp.tokenize(adata, model=vocab_v2)
    assert "gene identifiers" not in capsys.readouterr().err


@pytest.mark.parametrize("path", real_datasets(), ids=lambda p: p.stem)
def test_real_human_datasets_still_tokenize(path, vocab_v2):
    adata = ad.read_h5ad(path)
    keys = [None, *(k for k in ("gene_symbols", "ensembl_id") if k in adata.var)]
    for key in keys:
        if key is not None:
            # Genes without an identifier cannot be tokenized (data README); keep the others.
            adata = adata[:, adata.var[key].notna().to_numpy()].copy()
        scgf.pp.tokenize(adata, model=vocab_v2, gene_key=key, n_counts_key=None)
        assert adata.obsm["gf_tokens"].shape[0] == adata.n_obs
