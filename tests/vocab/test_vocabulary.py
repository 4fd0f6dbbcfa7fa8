"""Vocabularies load the real dictionaries and map identifiers like the reference."""

from __future__ import annotations

import numpy as np
import pytest

from scgf.vocab import Vocabulary, normalize_gene_ids
from tests.conftest import DICTS, needs_dicts

pytestmark = needs_dicts


def test_sizes_match_the_published_dictionaries(vocab_v1, vocab_v2):
    assert vocab_v2.n_genes == 20271 and len(vocab_v2.token_ids) == 20275
    assert vocab_v1.n_genes == 25424 and len(vocab_v1.token_ids) == 25426
    assert (vocab_v2.cls_id, vocab_v2.eos_id, vocab_v2.pad_id) == (2, 3, 0)
    assert vocab_v1.cls_id is None and vocab_v1.max_genes == 2048 and vocab_v2.max_genes == 4094
    # Gene token ids follow ascending Ensembl-ID order.
    genes = sorted(vocab_v2.gene_ids, key=vocab_v2.token_ids.get)
    assert genes == sorted(genes)


def test_mapping_covers_the_reference_keys(vocab_v2):
    # 91,753 keys of the V2 mapping dictionary point into the vocabulary (spec §2.1).
    assert len(vocab_v2.gene_mapping) >= 91753


def test_symbols_aliases_retired_ids_and_versions(vocab_v2):
    ids = [
        "A1BG",
        "abg",
        "HYST2477",
        "ENSG00000121410",
        "ENSG00000121410.12",
        "ENSG00000291836",
        " a1bg ",
        "NOT_A_GENE",
        None,
        "ENSMUSG00000000001",
    ]
    tokens = vocab_v2.map_genes(ids)
    a1bg = vocab_v2.token_ids["ENSG00000121410"]
    assert list(tokens[:5]) == [a1bg] * 5
    assert tokens[5] == vocab_v2.token_ids["ENSG00000094914"]  # retired → canonical
    assert tokens[6] == a1bg
    assert list(tokens[7:]) == [-1, -1, -1]


def test_v1_accepts_symbols_through_the_name_dictionary(vocab_v1):
    assert vocab_v1.map_genes(["CD3E"])[0] == vocab_v1.token_ids["ENSG00000198851"]


def test_normalize_keeps_dots_in_symbols():
    out = normalize_gene_ids(["RP11-34P13.7", "ENSG00000237683.5", "ENSGR0000182378.14"])
    assert list(out) == ["RP11-34P13.7", "ENSG00000237683", "ENSGR0000182378"]


def test_inverse_medians_and_ids(vocab_v2):
    tok = vocab_v2.token_ids["ENSG00000121410"]
    assert vocab_v2.inverse_median[tok] == 1.0 / vocab_v2.medians["ENSG00000121410"]
    assert vocab_v2.inverse_median[:4].tolist() == [0, 0, 0, 0]
    assert list(vocab_v2.tokens_to_ids(np.array([2, tok, 3]))) == [
        "<cls>",
        "ENSG00000121410",
        "<eos>",
    ]


def test_custom_files_and_validation(tmp_path):
    import pickle

    with open(tmp_path / "tok.pkl", "wb") as f:
        pickle.dump({"<pad>": 0, "<mask>": 1, "ENSG1": 2, "ENSG2": 3}, f)
    with open(tmp_path / "med.pkl", "wb") as f:
        pickle.dump({"ENSG1": 2.0, "ENSG2": 4.0}, f)
    vocab = Vocabulary.from_files(tmp_path / "tok.pkl", tmp_path / "med.pkl", name="mine")
    assert (vocab.context_size, vocab.special_tokens, vocab.n_genes) == (2048, False, 2)
    assert list(vocab.map_genes(["ensg2"])) == [3]
    with pytest.raises(ValueError, match="no <cls>/<eos>"):
        Vocabulary.from_files(tmp_path / "tok.pkl", tmp_path / "med.pkl", special_tokens=True)
    with open(tmp_path / "med.pkl", "wb") as f:
        pickle.dump({"ENSG1": 2.0}, f)
    with pytest.raises(ValueError, match="have no median"):
        Vocabulary.from_files(tmp_path / "tok.pkl", tmp_path / "med.pkl")


def test_from_directory(tmp_path):
    import shutil

    for name in (
        "token_dictionary_gc95M.pkl",
        "gene_median_dictionary_gc95M.pkl",
        "ensembl_mapping_dict_gc95M.pkl",
    ):
        shutil.copy(DICTS / name, tmp_path)
    vocab = Vocabulary.from_directory(tmp_path)
    assert vocab.special_tokens and vocab.context_size == 4096
    assert vocab.map_genes(["A1BG"])[0] == vocab.token_ids["ENSG00000121410"]
    with pytest.raises(FileNotFoundError):
        Vocabulary.from_directory(tmp_path / "nothing")


def write_vocabulary(folder, token_ids: dict, medians: dict, name: str = "custom") -> Vocabulary:
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "tok.pkl", "wb") as f:
        pickle.dump(token_ids, f)
    with open(folder / "med.pkl", "wb") as f:
        pickle.dump(medians, f)
    return Vocabulary.from_files(folder / "tok.pkl", folder / "med.pkl", name=name)


def test_fingerprint_is_content_not_name(tmp_path):
    tokens = {"<pad>": 0, "<mask>": 1, "ENSG1": 2, "ENSG2": 3}
    base = write_vocabulary(tmp_path / "a", tokens, {"ENSG1": 2.0, "ENSG2": 4.0})
    renamed = write_vocabulary(tmp_path / "b", tokens, {"ENSG1": 2.0, "ENSG2": 4.0}, "other")
    reordered = write_vocabulary(
        tmp_path / "c", dict(reversed(tokens.items())), {"ENSG2": 4.0, "ENSG1": 2.0}
    )
    other_median = write_vocabulary(tmp_path / "d", tokens, {"ENSG1": 2.0, "ENSG2": 4.5})
    swapped = write_vocabulary(
        tmp_path / "e", {**tokens, "ENSG1": 3, "ENSG2": 2}, {"ENSG1": 2.0, "ENSG2": 4.0}
    )
    assert base.fingerprint == renamed.fingerprint == reordered.fingerprint
    assert len({base.fingerprint, other_median.fingerprint, swapped.fingerprint}) == 3
    assert base.describe()["vocabulary_fingerprint"] == base.fingerprint


@needs_dicts
def test_published_fingerprints_differ(vocab_v1, vocab_v2):
    assert vocab_v1.fingerprint != vocab_v2.fingerprint
    assert len(vocab_v2.fingerprint) == 16
