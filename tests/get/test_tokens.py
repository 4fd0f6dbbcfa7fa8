"""scgf.get.tokens and the vocabulary check that later tools use."""

from __future__ import annotations

import anndata as ad
import pytest

import scgf
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


@pytest.fixture
def pbmc():
    return ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")


def test_get_tokens_as_ids(pbmc, vocab_v2):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    ids = scgf.get.tokens(pbmc, as_ids=True, model=vocab_v2)[0]
    assert ids[0] == "<cls>" and ids[-1] == "<eos>" and ids[1].startswith("ENSG")


def test_get_tokens_without_tokens_says_what_to_do(pbmc):
    with pytest.raises(KeyError, match="run scgf.pp.tokenize"):
        scgf.get.tokens(pbmc)


def test_check_token_vocabulary(pbmc, vocab_v1, vocab_v2):
    scgf.pp.tokenize(pbmc, model=vocab_v1, gene_key="ensembl_id")
    scgf.get.check_token_vocabulary(pbmc, vocab_v1)
    with pytest.raises(ValueError, match="V1 tokens of the gc30M vocabulary"):
        scgf.get.check_token_vocabulary(pbmc, vocab_v2)


def test_two_custom_vocabularies_with_one_name_are_told_apart(pbmc, vocab_v2):
    """Tokens are checked by content: a vocabulary of the same name and layout but other
    medians (e.g. two custom vocabularies both called "custom") is refused."""
    from dataclasses import replace

    mine = replace(vocab_v2, name="custom")
    theirs = replace(
        mine,
        medians={g: m * 1.5 if i % 2 else m for i, (g, m) in enumerate(vocab_v2.medians.items())},
    )
    scgf.pp.tokenize(pbmc, model=mine)
    scgf.get.check_token_vocabulary(pbmc, replace(vocab_v2, name="custom"))
    with pytest.raises(ValueError, match="fingerprint"):
        scgf.get.check_token_vocabulary(pbmc, theirs)


def test_tokens_without_a_fingerprint_are_checked_by_name(pbmc, vocab_v1, vocab_v2):
    scgf.pp.tokenize(pbmc, model=vocab_v2)
    del pbmc.uns["gf_tokens"]["params"]["vocabulary_fingerprint"]  # written by scgf 0.1.0
    scgf.get.check_token_vocabulary(pbmc, vocab_v2)
    with pytest.raises(ValueError, match="V2 tokens of the gc104M vocabulary"):
        scgf.get.check_token_vocabulary(pbmc, vocab_v1)
