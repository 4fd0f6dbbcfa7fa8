"""The array kernels of gene classification: labels to tokens, folds over genes, balancing and
per-gene averaging of token probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from scgf.tl._genes._aggregate import GeneProbabilities
from scgf.tl._genes._folds import TEST_FRACTION, balance_binary, gene_folds, occurrence_ratio
from scgf.tl._genes._labels import labels_from_dict
from tests.conftest import needs_dicts


def test_folds_are_the_reference_split_and_partition_the_genes():
    labels = np.repeat([0, 1, 2], [15, 20, 10])
    folds = gene_folds(labels, 5, random_state=0)
    assert TEST_FRACTION == pytest.approx(0.47368, abs=1e-5)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    held_out = np.zeros(len(labels), int)
    for fold, (train, held) in zip(folds, splitter.split(labels, labels), strict=True):
        validation, test = train_test_split(
            held, test_size=TEST_FRACTION, stratify=labels[held], random_state=0
        )
        assert fold.train.tolist() == sorted(train)
        assert fold.validation.tolist() == sorted(validation)
        assert fold.test.tolist() == sorted(test)
        parts = np.concatenate([fold.train, fold.validation, fold.test])
        assert sorted(parts) == list(range(len(labels)))  # no gene in two splits
        held_out[np.concatenate([fold.validation, fold.test])] += 1
        assert set(labels[fold.train]) == {0, 1, 2}
    assert (held_out == 1).all()  # every gene held out in exactly one fold


def test_a_class_with_one_held_out_gene_still_splits():
    labels = np.repeat([0, 1], [5, 30])  # 1 gene of class 0 per fold
    for fold in gene_folds(labels, 5):
        assert len(fold.validation) and len(fold.test)


def test_balancing_drops_genes_of_the_overrepresented_class_only():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 30])
    occurrences = np.where(labels == 0, rng.integers(50, 100, 60), rng.integers(5, 20, 60))
    genes = np.arange(100, 160)
    kept = balance_binary(genes, labels, occurrences, random_state=0)
    keep = np.isin(genes, kept)
    assert 0.8 <= occurrence_ratio(labels[keep], occurrences[keep]) <= 1.25
    assert keep[labels == 1].all() and not keep[labels == 0].all()
    np.testing.assert_array_equal(kept, balance_binary(genes, labels, occurrences))
    # already balanced: unchanged
    even = np.full(60, 10)
    np.testing.assert_array_equal(balance_binary(genes, labels, even), genes)


def test_gene_probabilities_average_each_token_over_its_cells():
    torch.manual_seed(0)
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 8, 3, 0, 0, 0], [2, 9, 7, 8, 5, 3]])
    lengths = torch.tensor([5, 3, 6])
    logits = torch.randn(3, 6, 2)
    acc = GeneProbabilities(12, 2, special_tokens=True, keep_tokens=np.array([8]))
    acc.add(logits[:2], ids[:2], lengths[:2])  # two batches
    acc.add(logits[2:], ids[2:], lengths[2:])
    proba, n = acc.mean()
    soft = torch.softmax(logits, -1).double()
    expected_8 = (soft[0, 2] + soft[1, 1] + soft[2, 3]) / 3
    np.testing.assert_allclose(proba[8], expected_8.numpy(), atol=1e-12)
    np.testing.assert_allclose(proba[5], soft[2, 4].numpy(), atol=1e-12)
    assert n.tolist() == [0, 0, 0, 0, 0, 1, 0, 2, 3, 2, 0, 0]  # <cls>, <eos>, padding: none
    assert np.isnan(proba[[0, 2, 3]]).all()
    tokens, occurrences = acc.occurrences()
    assert tokens.tolist() == [8, 8, 8] and occurrences.shape == (3, 2)


@needs_dicts
def test_labels_map_symbols_and_ids_and_report_the_unmapped(vocab_v2):
    with pytest.warns(UserWarning, match=r"2 of 6 labelled genes .* \(b: 2 \(NOTAGENE, FOO\)\)"):
        labels = labels_from_dict(
            {"a": ["CD3E", "ENSG00000019582", "cd3e"], "b": ["LYZ", "NOTAGENE", "FOO"]}, vocab_v2
        )
    assert labels.classes == ("a", "b")
    assert labels.counts() == {"a": 2, "b": 1}  # CD3E twice in "a" counts once
    assert labels.tokens.tolist() == vocab_v2.map_genes(["CD3E", "CD74", "LYZ"]).tolist()
    table = labels.token_labels(len(vocab_v2.id_of_token))
    assert table[labels.tokens].tolist() == [0, 0, 1] and (table >= 0).sum() == 3
