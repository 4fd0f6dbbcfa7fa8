"""Training datasets and collators: what each example and batch holds, and MLM masking."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from scgf._train import (
    ClassificationCollator,
    TokenClassificationCollator,
    TokenDataset,
    masked_lm_collator,
)
from scgf.pp._rank_encoding import tokens_to_csr
from tests.conftest import needs_dicts

IGNORE = -100


def matrix(cells: list[list[int]], context: int = 64):
    lengths = np.array([len(c) for c in cells])
    flat = np.array([t for c in cells for t in c], dtype=np.int32)
    return tokens_to_csr(lengths, flat, context)


CELLS = [[2, 10, 11, 12, 3], [], [2, 20, 3], [2, 30, 31, 32, 33, 3]]


def test_dataset_skips_empty_and_unlabelled_cells_and_keeps_lengths():
    data = TokenDataset(matrix(CELLS), cell_labels=np.array([1, 0, -1, 2]))
    assert len(data) == 2 and data.lengths.tolist() == [5, 6]
    first, second = data[0], data[1]
    assert first["input_ids"].tolist() == CELLS[0] and int(first["labels"]) == 1
    assert second["input_ids"].tolist() == CELLS[3] and int(second["labels"]) == 2


def test_dataset_token_labels_mark_only_labelled_genes():
    token_labels = np.full(40, -1)
    token_labels[[11, 31]] = [0, 1]
    data = TokenDataset(matrix(CELLS), token_labels=token_labels)
    assert len(data) == 2  # the cell without a labelled gene is left out
    assert data[0]["labels"].tolist() == [IGNORE, IGNORE, 0, IGNORE, IGNORE]
    assert data[1]["labels"].tolist() == [IGNORE, IGNORE, 1, IGNORE, IGNORE, IGNORE]


def test_dataset_over_several_backed_files(tmp_path):
    paths = []
    for i, cells in enumerate((CELLS[:2], CELLS[2:])):
        adata = ad.AnnData(np.zeros((len(cells), 1), dtype=np.float32))
        adata.obsm["gf_tokens"] = matrix(cells)
        adata.write_h5ad(tmp_path / f"part{i}.h5ad")
        paths.append(tmp_path / f"part{i}.h5ad")
    data = TokenDataset.from_files(paths, cell_labels=np.array([0, 1, 2, 3]))
    got = [(data[i]["input_ids"].tolist(), int(data[i]["labels"])) for i in range(len(data))]
    assert got == [(CELLS[0], 0), (CELLS[2], 2), (CELLS[3], 3)]
    with pytest.raises(KeyError, match="no obsm\\['tok'\\]"):
        TokenDataset.from_files(paths, key="tok")


def test_classification_collators_pad_right():
    data = TokenDataset(matrix(CELLS), cell_labels=np.array([1, 0, 0, 2]))
    batch = ClassificationCollator(pad_id=0)([data[0], data[2]])
    assert batch["input_ids"].tolist() == [CELLS[0] + [0], CELLS[3]]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0], [1] * 6]
    assert batch["labels"].tolist() == [1, 2]
    token_labels = np.zeros(40, dtype=int)
    tokens = TokenDataset(matrix(CELLS), token_labels=token_labels)
    batch = TokenClassificationCollator()([tokens[2], tokens[1]])  # cells 3 and 2
    assert batch["labels"][0].tolist() == [0] * 6
    assert batch["labels"][1].tolist() == [0] * 3 + [IGNORE] * 3  # padding ignored


@needs_dicts
@pytest.mark.parametrize("mask_cls_eos", [True, False])
def test_masked_lm_collator_follows_the_reference_rates(vocab_v2, mask_cls_eos):
    rng = np.random.default_rng(0)
    cells = [
        [2, *rng.choice(np.arange(4, 20_000), size=int(n), replace=False), 3]
        for n in rng.integers(50, 400, size=64)
    ]
    data = TokenDataset(matrix(cells, context=4096))
    collate = masked_lm_collator(vocab_v2, mask_cls_eos=mask_cls_eos, seed=0)
    batch = collate([data[i] for i in range(len(data))])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    original = ClassificationCollator()([data[i] for i in range(len(data))])["input_ids"]
    chosen = labels != IGNORE
    assert (labels[chosen] == original[chosen]).all()  # labels are the original tokens
    assert not chosen[mask == 0].any()  # padding is never chosen
    real = int(mask.sum())
    assert abs(int(chosen.sum()) / real - 0.15) < 0.01
    as_mask = (ids == vocab_v2.token_ids["<mask>"]) & chosen
    unchanged = (ids == original) & chosen
    assert abs(int(as_mask.sum()) / int(chosen.sum()) - 0.8) < 0.03
    assert abs(int(unchanged.sum()) / int(chosen.sum()) - 0.1) < 0.03  # (+ rare random hits)
    assert (ids[~chosen] == original[~chosen]).all()
    specials = (original == vocab_v2.cls_id) | (original == vocab_v2.eos_id)
    if mask_cls_eos:
        assert chosen[specials].any()  # the reference may mask <cls>/<eos>
    else:
        assert not chosen[specials].any()
    assert batch["input_ids"].dtype == torch.long
