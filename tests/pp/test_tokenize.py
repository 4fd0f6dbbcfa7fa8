"""Behaviour of scgf.pp.tokenize that users rely on: storage, formats, variants, errors."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgf
from scgf.pp import InputDataError
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


@pytest.fixture
def pbmc():
    return ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")


def token_lists(adata, key="gf_tokens"):
    return [t.tolist() for t in scgf.get.tokens(adata, key=key)]


def test_tokens_stored_compactly_with_params(pbmc, vocab_v2):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    tokens = pbmc.obsm["gf_tokens"]
    assert sp.issparse(tokens) and tokens.format == "csr" and tokens.dtype == np.int32
    assert tokens.shape == (pbmc.n_obs, 4096)
    params = pbmc.uns["gf_tokens"]["params"]
    assert params["vocabulary"] == "gc104M" and params["special_tokens"]
    assert params["context_size"] == 4096 and params["version"] == "V2"
    first = scgf.get.tokens(pbmc)[0]
    assert first[0] == 2 and first[-1] == 3 and len(first) == tokens[0].nnz


def test_survives_subsetting_and_h5ad_roundtrip(pbmc, vocab_v2, tmp_path):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    expected = token_lists(pbmc)
    subset = pbmc[::3].copy()
    assert token_lists(subset) == expected[::3]
    pbmc.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    assert token_lists(back) == expected
    assert dict(back.uns["gf_tokens"]["params"])["vocabulary"] == "gc104M"


def test_csr_csc_dense_and_layer_agree(pbmc, vocab_v2):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    expected = token_lists(pbmc)
    for convert in (sp.csc_matrix, lambda x: x.toarray()):
        other = pbmc.copy()
        other.X = convert(other.X)
        scgf.pp.tokenize(other, model=vocab_v2, chunk_size=97)
        assert token_lists(other) == expected
    layered = pbmc.copy()
    layered.layers["counts"] = layered.X.copy()
    layered.X = sp.csr_matrix(np.log1p(layered.X.toarray()))
    scgf.pp.tokenize(layered, model=vocab_v2, layer="counts", key_added="tok")
    assert token_lists(layered, "tok") == expected


def test_copy_and_inplace_variants(pbmc, vocab_v2):
    before = pbmc.copy()
    out = scgf.pp.tokenize(pbmc, model=vocab_v2, copy=True)
    assert "gf_tokens" in out.obsm and "gf_tokens" not in pbmc.obsm
    matrix = scgf.pp.tokenize(pbmc, model=vocab_v2, inplace=False)
    assert "gf_tokens" not in pbmc.obsm and "gf_tokens" not in pbmc.uns
    assert (matrix != out.obsm["gf_tokens"]).nnz == 0
    assert (pbmc.X != before.X).nnz == 0
    assert scgf.pp.tokenize(pbmc, model=vocab_v2) is None


def test_mudata_uses_rna_modality(pbmc, vocab_v2):
    mdata = md.MuData({"rna": pbmc.copy()})
    scgf.pp.tokenize(mdata, model=vocab_v2)
    assert "gf_tokens" in mdata.mod["rna"].obsm
    assert len(scgf.get.tokens(mdata)) == pbmc.n_obs


def test_backed_files_read_and_write_in_chunks(pbmc, vocab_v2, tmp_path):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    expected = token_lists(pbmc)
    del pbmc.obsm["gf_tokens"], pbmc.uns["gf_tokens"]
    path = tmp_path / "b.h5ad"
    pbmc.write_h5ad(path)

    readonly = ad.read_h5ad(path, backed="r")
    scgf.pp.tokenize(readonly, model=vocab_v2, chunk_size=64)
    assert token_lists(readonly) == expected
    readonly.file.close()

    writable = ad.read_h5ad(path, backed="r+")
    scgf.pp.tokenize(writable, model=vocab_v2, chunk_size=64)
    assert token_lists(writable) == expected
    writable.file.close()
    back = ad.read_h5ad(path)
    assert token_lists(back) == expected
    assert back.uns["gf_tokens"]["params"]["vocabulary"] == "gc104M"


def test_failed_backed_run_leaves_file_as_it_was(pbmc, vocab_v2, tmp_path):
    pbmc.X = pbmc.X.astype(np.float32)
    pbmc.X.data[-1] = 0.5  # a bad value in the last chunk
    path = tmp_path / "bad.h5ad"
    pbmc.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r+")
    with pytest.raises(InputDataError):
        scgf.pp.tokenize(backed, model=vocab_v2, chunk_size=64)
    assert "gf_tokens" not in backed.obsm
    assert list(backed.file._file["obsm"].keys()) == []
    assert "scgf_partial" not in backed.file._file
    backed.file.close()


def test_v1_tokens(pbmc, vocab_v1):
    scgf.pp.tokenize(pbmc, model=vocab_v1, gene_key="ensembl_id")
    assert pbmc.obsm["gf_tokens"].shape[1] == 2048
    first = scgf.get.tokens(pbmc)[0]
    assert 2 not in first[:1] or vocab_v1.id_of_token[2] != "<cls>"
    assert all(vocab_v1.id_of_token[t].startswith("ENSG") for t in first)


def test_context_truncation_keeps_top_genes(pbmc, vocab_v2):
    full = scgf.pp.tokenize(pbmc, model=vocab_v2, inplace=False)
    short = scgf.pp.tokenize(pbmc, model=vocab_v2, context_size=10, inplace=False)
    assert short.shape[1] == 10
    for i in range(5):
        row = short[i].toarray().ravel()
        whole = full[i].toarray().ravel()[: full[i].nnz]
        assert list(row) == [2, *whole[1:9], 3]


def test_ties_follow_ascending_token_id(vocab_v2):
    # Genes that share a median and a count tie exactly; their order must not depend on
    # the column order of the input.
    by_median = pd.Series(vocab_v2.medians).loc[list(vocab_v2.gene_ids)]
    shared = by_median[by_median.duplicated(keep=False)]
    tied = shared[shared == shared.value_counts().index[0]].index[:6].tolist()
    other = [g for g in vocab_v2.gene_ids if g not in shared.index][:2]
    genes = tied + other
    counts = np.array([[3, 3, 3, 3, 3, 3, 1, 50]], dtype=np.float32)
    expected_ties = sorted(vocab_v2.token_ids[g] for g in tied)
    for order in (list(range(8)), list(range(8))[::-1], [3, 1, 7, 5, 0, 6, 2, 4]):
        adata = ad.AnnData(
            sp.csr_matrix(counts[:, order]), var=pd.DataFrame(index=np.array(genes)[order])
        )
        got = scgf.get.tokens(scgf.pp.tokenize(adata, model=vocab_v2, copy=True))[0]
        assert got[0] == 2 and got[-1] == 3 and len(got) == 10
        pos = {t: i for i, t in enumerate(got)}
        tied_positions = sorted(pos[t] for t in expected_ties)
        assert [got[i] for i in tied_positions] == expected_ties


def test_duplicated_ids_are_summed_once(vocab_v2):
    ids = ["ENSG00000121410", "ENSG00000121410", "ENSG00000175899", "A1BG"]
    counts = sp.csr_matrix(np.array([[2, 3, 4, 1]], dtype=np.float32))
    adata = ad.AnnData(counts, var=pd.DataFrame(index=ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-unique var_names
        got = scgf.get.tokens(scgf.pp.tokenize(adata, model=vocab_v2, copy=True), as_ids=True)[0]
    assert sorted(got[1:-1]) == ["ENSG00000121410", "ENSG00000175899"]
    # A1BG: 2 + 3 + 1 = 6 counts, versus 4 for A2M; the ranking divides by medians.
    score = {
        g: c / vocab_v2.medians[g] for g, c in [("ENSG00000121410", 6), ("ENSG00000175899", 4)]
    }
    assert list(got[1:-1]) == sorted(score, key=score.get, reverse=True)


def test_missing_n_counts_uses_row_sums(pbmc, vocab_v2):
    expected = token_lists(scgf.pp.tokenize(pbmc, model=vocab_v2, copy=True))
    no_totals = pbmc.copy()
    del no_totals.obs["n_counts"]
    scgf.pp.tokenize(no_totals, model=vocab_v2)
    assert token_lists(no_totals) == expected
    assert "n_counts_key" not in no_totals.uns["gf_tokens"]["params"]


def test_empty_cells_keep_their_row_with_a_warning(pbmc, vocab_v2):
    counts = pbmc.X.toarray()
    counts[[3, 7]] = 0
    pbmc.X = sp.csr_matrix(counts)
    with pytest.warns(UserWarning, match="2 of 700 cells have no counts on vocabulary genes"):
        scgf.pp.tokenize(pbmc, model=vocab_v2, n_counts_key=None)
    lists = scgf.get.tokens(pbmc)
    assert len(lists) == 700 and len(lists[3]) == 0 and len(lists[7]) == 0 and len(lists[4]) > 0


def test_mask_var_ignores_genes(pbmc, vocab_v2):
    mask = np.ones(pbmc.n_vars, bool)
    mask[:100] = False
    scgf.pp.tokenize(pbmc, model=vocab_v2, mask_var=mask)
    ignored = set(vocab_v2.map_genes(pbmc.var_names[:100]).tolist())
    assert not ignored & {t for row in token_lists(pbmc) for t in row}


# --- bad input: a clear error, and the data left untouched ---------------------------------


def assert_untouched(adata, before):
    assert "gf_tokens" not in adata.obsm and "gf_tokens" not in adata.uns
    np.testing.assert_array_equal(adata.X.toarray(), before.X.toarray())


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (lambda x: np.log1p(x), "log-transformed"),
        (lambda x: x / x.sum(1, keepdims=True) * 1e4, "normalised"),
        (lambda x: x - 1, "negative values"),
        (lambda x: np.where(x > 5, np.nan, x), "non-finite"),
    ],
)
def test_not_raw_counts(pbmc, vocab_v2, transform, message):
    pbmc.X = sp.csr_matrix(transform(pbmc.X.toarray()))
    before = pbmc.copy()
    with pytest.raises(InputDataError, match=message):
        scgf.pp.tokenize(pbmc, model=vocab_v2)
    assert_untouched(pbmc, before)


def test_mouse_ids_report_overlap_and_cause(vocab_v2):
    ids = [f"ENSMUSG{i:011d}" for i in range(200)]
    adata = ad.AnnData(sp.csr_matrix(np.ones((3, 200), np.float32)), var=pd.DataFrame(index=ids))
    with pytest.raises(InputDataError, match=r"Only 0 of 200 genes \(0.0%\).*mouse"):
        scgf.pp.tokenize(adata, model=vocab_v2)
    assert "gf_tokens" not in adata.obsm


def test_wrong_column_suggests_the_right_one(vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc_sorted_zheng2017_3100.h5ad")
    adata.var["row"] = [str(i) for i in range(adata.n_vars)]
    with pytest.raises(InputDataError, match=r"mostly numbers.*gene_key=None for var_names"):
        scgf.pp.tokenize(adata, model=vocab_v2, gene_key="row")


def test_v1_with_v2_options(pbmc, vocab_v1):
    with pytest.raises(ValueError, match="no <cls>/<eos> tokens"):
        scgf.pp.tokenize(pbmc, model=vocab_v1, special_tokens=True)
    with pytest.raises(ValueError, match="exceeds the gc30M"):
        scgf.pp.tokenize(pbmc, model=vocab_v1, context_size=4096)
    assert "gf_tokens" not in pbmc.obsm


def test_bad_n_counts(pbmc, vocab_v2):
    pbmc.obs.loc[pbmc.obs_names[5], "n_counts"] = 0
    with pytest.raises(InputDataError, match=r"obs\['n_counts'\] is 0.0 for cell"):
        scgf.pp.tokenize(pbmc, model=vocab_v2)
    assert "gf_tokens" not in pbmc.obsm


def test_unknown_names(pbmc, vocab_v2):
    with pytest.raises(KeyError, match="No var column 'nope'"):
        scgf.pp.tokenize(pbmc, model=vocab_v2, gene_key="nope")
    with pytest.raises(KeyError, match="No layer 'counts'"):
        scgf.pp.tokenize(pbmc, model=vocab_v2, layer="counts")
