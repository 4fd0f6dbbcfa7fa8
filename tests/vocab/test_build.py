"""Custom vocabularies: token layout, saving and loading (scgf and the reference's pickles),
identity by fingerprint, and the messages for bad input."""

from __future__ import annotations

import hashlib
import json
import pickle

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scgf
from scgf.pp._checks import InputDataError
from scgf.vocab import Vocabulary
from tests.conftest import DATA, needs_data, needs_dicts

PBMC = DATA / "pbmc68k_reduced_counts.h5ad"


def _cells(counts, ids) -> ad.AnnData:
    adata = ad.AnnData(sp.csr_matrix(np.asarray(counts, dtype=np.float32)))
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    adata.var["ensembl_id"] = ids
    adata.var["symbol"] = [f"SYM{i}" for i in range(adata.n_vars)]
    return adata


# Gene 3 is in 4 cells, gene 1 in 3, gene 2 in 1; gene 1 is listed after gene 3 on purpose.
TOY = _cells(
    [[1, 0, 2], [1, 1, 3], [0, 0, 1], [2, 0, 4]],
    ["ENSG00000000003", "ENSG00000000002", "ENSG00000000001.2"],
)


@pytest.fixture(scope="module")
def pbmc_vocab():
    return scgf.vocab.build(PBMC, gene_key="ensembl_id", symbol_key="gene_symbols", name="pbmc")


@pytest.mark.parametrize(("version", "specials"), [("V2", 4), ("V1", 2)])
def test_token_layout_follows_the_reference(version, specials):
    vocab = scgf.vocab.build(TOY, gene_key="ensembl_id", version=version, min_cells=1)
    expected = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    assert {k: v for k, v in vocab.token_ids.items() if k.startswith("<")} == dict(
        list(expected.items())[:specials]
    )
    # Genes follow the special tokens in ascending Ensembl-ID order.
    assert vocab.gene_ids == ("ENSG00000000001", "ENSG00000000002", "ENSG00000000003")
    assert [vocab.token_ids[g] for g in vocab.gene_ids] == [specials, specials + 1, specials + 2]
    assert vocab.version == version
    assert vocab.context_size == {"V2": 4096, "V1": 2048}[version]


def test_min_cells_and_genes_restrict_the_vocabulary():
    vocab = scgf.vocab.build(TOY, gene_key="ensembl_id", min_cells=3)
    assert vocab.gene_ids == ("ENSG00000000001", "ENSG00000000003")
    assert vocab.token_ids["ENSG00000000003"] == 5  # ids stay contiguous
    vocab = scgf.vocab.build(
        TOY, gene_key="ensembl_id", min_cells=1, genes=["ENSG00000000002"], context_size=64
    )
    assert vocab.gene_ids == ("ENSG00000000002",) and vocab.context_size == 64
    with pytest.raises(ValueError, match="No gene is expressed in at least min_cells=5"):
        scgf.vocab.build(TOY, gene_key="ensembl_id", min_cells=5)


def test_symbols_are_mapped_and_recorded():
    vocab = scgf.vocab.build(TOY, gene_key="ensembl_id", symbol_key="symbol", min_cells=1)
    assert vocab.gene_names == {
        "SYM0": "ENSG00000000003",
        "SYM1": "ENSG00000000002",
        "SYM2": "ENSG00000000001",
    }
    assert list(vocab.map_genes(["sym2", "ENSG00000000002.9", "SYM9"])) == [4, 5, -1]


@needs_dicts
@needs_data
def test_symbols_read_through_a_published_mapping(vocab_v2, pbmc_vocab):
    # pbmc68k's var_names are symbols: mapped through V2's mapping they give Ensembl IDs
    # (more than the exact symbol lookups of var["ensembl_id"]), and the vocabulary keeps the
    # V2 names and aliases of its genes.
    vocab = scgf.vocab.build(PBMC, gene_mapping=vocab_v2)
    assert set(vocab.gene_ids) > set(pbmc_vocab.gene_ids) & set(vocab_v2.gene_ids)
    cd3e = vocab.token_ids["ENSG00000198851"]
    assert list(vocab.map_genes(["CD3E", "cd3e", "ENSG00000198851.3"])) == [cd3e] * 3
    assert vocab.gene_names["CD3E"] == "ENSG00000198851"
    assert set(vocab.gene_names.values()) <= set(vocab.gene_ids)


@needs_data
def test_saved_vocabulary_loads_back_identically(pbmc_vocab, tmp_path):
    vocab = pbmc_vocab
    assert vocab.n_genes > 500 and len(vocab.gene_names) > 500
    written = vocab.save(tmp_path / "v")
    assert sorted(p.name for p in written) == [
        "ensembl_mapping_dict_pbmc.pkl",
        "gene_median_dictionary_pbmc.pkl",
        "gene_name_id_dict_pbmc.pkl",
        "scgf_vocabulary.json",
        "token_dictionary_pbmc.pkl",
    ]
    from_json = Vocabulary.load(tmp_path / "v")
    for path in written:
        if path.suffix == ".pkl":
            path.rename(tmp_path / path.name)
    from_pickles = Vocabulary.load(tmp_path)
    for loaded in (from_json, from_pickles):
        assert loaded.token_ids == vocab.token_ids
        assert loaded.medians == vocab.medians  # bit for bit
        assert loaded.gene_mapping == vocab.gene_mapping
        assert loaded.gene_names == vocab.gene_names
        assert loaded.fingerprint == vocab.fingerprint
        assert (loaded.context_size, loaded.special_tokens) == (4096, True)
    assert from_json.name == "pbmc"
    # Plain pickle reads the reference's types: str -> int, str -> float, str -> str.
    with open(tmp_path / "token_dictionary_pbmc.pkl", "rb") as f:
        tokens = pickle.load(f)
    with open(tmp_path / "gene_median_dictionary_pbmc.pkl", "rb") as f:
        medians = pickle.load(f)
    assert tokens["<cls>"] == 2 and {type(k) for k in tokens} == {str}
    assert {type(v) for v in tokens.values()} == {int}
    assert {type(v) for v in medians.values()} == {float} and len(medians) == vocab.n_genes
    for name in ("gene_name_id_dict_pbmc.pkl", "ensembl_mapping_dict_pbmc.pkl"):
        with open(tmp_path / name, "rb") as f:
            mapping = pickle.load(f)
        assert {type(k) for k in mapping} | {type(v) for v in mapping.values()} == {str}


@needs_data
def test_saved_pickles_serve_the_reference_tokenizer(pbmc_vocab, tmp_path):
    from tests._reference_tokenizer import canonical, load_reference_dicts, reference_tokenize

    pbmc_vocab.save(tmp_path, format="pickle")
    adata = ad.read_h5ad(PBMC)
    expected = reference_tokenize(
        adata, adata.var["ensembl_id"], *load_reference_dicts(tmp_path, "pbmc")
    )
    scgf.pp.tokenize(adata, model=pbmc_vocab, gene_key="ensembl_id")
    ours = scgf.get.tokens(adata)
    assert sum(len(t) for t, _ in expected) > 100_000
    for (tokens, scores), mine in zip(expected, ours, strict=True):
        np.testing.assert_array_equal(mine[1:-1], canonical(tokens, scores))


@needs_data
def test_saving_refuses_an_existing_vocabulary_and_edited_files(pbmc_vocab, tmp_path):
    pbmc_vocab.save(tmp_path, format="scgf")
    with pytest.raises(FileExistsError, match="already holds a vocabulary"):
        pbmc_vocab.save(tmp_path, format="pickle")
    pbmc_vocab.save(tmp_path, format="pickle", overwrite=True)  # replaces all of them
    assert not (tmp_path / "scgf_vocabulary.json").exists()
    pbmc_vocab.save(tmp_path / "json", format="scgf")
    path = tmp_path / "json" / "scgf_vocabulary.json"
    content = json.loads(path.read_text())
    gene = next(iter(content["medians"]))
    content["medians"][gene] *= 2
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="changed after it was saved"):
        Vocabulary.load(path)


@needs_dicts
@needs_data
def test_published_v2_rebuilt_through_save_and_load_tokenizes_identically(vocab_v2, tmp_path):
    vocab_v2.save(tmp_path, format="pickle")
    rebuilt = Vocabulary.load(tmp_path)
    assert rebuilt.fingerprint == vocab_v2.fingerprint
    assert rebuilt.gene_mapping == vocab_v2.gene_mapping
    adata = ad.read_h5ad(PBMC)
    published = scgf.pp.tokenize(adata, model=vocab_v2, inplace=False)
    mine = scgf.pp.tokenize(adata, model=rebuilt, inplace=False)
    assert published.nnz > 100_000
    assert (published != mine).nnz == 0


@needs_data
def test_tokens_of_one_vocabulary_are_refused_by_a_model_of_another(tmp_path):
    from tests._tiny import make_tiny_checkpoint

    mine = scgf.vocab.build(PBMC, gene_key="ensembl_id", min_cells=10)
    other = scgf.vocab.build(PBMC, gene_key="ensembl_id", min_cells=20)
    assert mine.fingerprint != other.fingerprint
    folder = make_tiny_checkpoint(tmp_path / "model", "V2")
    other.save(folder)
    assert scgf.models.get_vocabulary(folder).fingerprint == other.fingerprint
    cells = ad.read_h5ad(PBMC)[:30].copy()
    scgf.pp.tokenize(cells, model=mine, gene_key="ensembl_id")
    with pytest.raises(ValueError, match="Tokenize again with this model"):
        scgf.tl.embed(cells, model=folder)
    # The same cells tokenized with the model's own vocabulary are embedded.
    scgf.pp.tokenize(cells, model=folder, gene_key="ensembl_id")
    assert cells.uns["gf_tokens"]["params"]["vocabulary_fingerprint"] == other.fingerprint
    scgf.tl.embed(cells, model=folder)
    assert cells.obsm["X_geneformer"].shape == (30, 16)


@pytest.mark.parametrize("fmt", ["scgf", "pickle"])
def test_a_folder_vocabulary_too_large_for_its_model_is_refused(tmp_path, fmt):
    from tests._tiny import make_tiny_checkpoint

    folder = make_tiny_checkpoint(tmp_path, "V2")
    genes = [f"ENSG{i:011d}" for i in range(20300)]  # more tokens than vocab_size=20275
    vocab = Vocabulary(
        name="big",
        token_ids={"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
        | {g: i + 4 for i, g in enumerate(genes)},
        medians=dict.fromkeys(genes, 1.0),
        gene_mapping={g: g for g in genes},
        context_size=4096,
        special_tokens=True,
    )
    vocab.save(folder, format=fmt)  # scgf's file, or the reference's four pickles
    with pytest.raises(scgf.models.UnknownModelError, match="vocab_size=20275"):
        scgf.models.get_vocabulary(folder)


# --- bad input ------------------------------------------------------------------------------


@needs_data
def test_normalised_data_are_refused_as_the_tokenizer_refuses_them():
    adata = ad.read_h5ad(PBMC)[:50].copy()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))
    with pytest.raises(InputDataError, match="looks log-transformed") as built:
        scgf.vocab.build(adata, gene_key="ensembl_id")
    with pytest.raises(InputDataError) as tokenized:
        vocab = scgf.vocab.build(PBMC, gene_key="ensembl_id")
        scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id")
    assert str(built.value) == str(tokenized.value)  # the same message


def test_genes_without_ensembl_ids_are_named():
    with pytest.raises(ValueError, match=r"^Only 0 of 3 genes in var_names have an Ensembl") as e:
        scgf.vocab.build(TOY.copy())
    assert "gene_key='ensembl_id' (3 Ensembl IDs)" in str(e.value)


def test_an_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="The corpus is empty"):
        scgf.vocab.build([])
    with pytest.raises(ValueError, match="has no cells"):
        scgf.vocab.build(TOY[:0].copy(), gene_key="ensembl_id")
    with pytest.raises(FileNotFoundError, match="no such file"):
        scgf.vocab.build(tmp_path / "missing.h5ad")


@needs_data
def test_input_files_are_never_modified():
    files = [PBMC, DATA / "pbmc_chr21_10x_v3.h5ad"]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    vocab = scgf.vocab.build(files, gene_key="ensembl_id", method="exact", min_cells=1)
    assert vocab.n_genes > 700
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == before


def test_a_vocabulary_of_another_species_tokenizes_its_own_genes():
    # mouse Ensembl IDs are refused by the published (human) vocabularies, but a vocabulary
    # built from mouse cells takes them
    counts = np.random.default_rng(0).poisson(1.0, (40, 30)).astype(np.float32)
    mouse = ad.AnnData(sp.csr_matrix(counts))
    mouse.var_names = [f"ENSMUSG{i:011d}" for i in range(30)]
    vocab = scgf.vocab.build(mouse, min_cells=1, n_counts_key=None, name="mouse")
    scgf.pp.tokenize(mouse, model=vocab)
    first = scgf.get.tokens(mouse)[0]
    assert len(first) == 2 + (counts[0] > 0).sum()  # <cls>, every expressed gene, <eos>
    with pytest.raises(InputDataError, match="looks like mouse genes"):
        scgf.pp.tokenize(mouse.copy(), model="V2")
