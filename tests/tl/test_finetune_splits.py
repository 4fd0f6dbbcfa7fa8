"""Train/validation/test splits and label encoding of scgf.tl.finetune (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scgf.tl._finetune._labels import LabelError, encode, encode_labels
from scgf.tl._finetune._splits import (
    SplitError,
    as_categorical,
    from_column,
    grouped,
    stratified,
)
from scgf.tl._finetune._training import balanced_weights, class_weight_tensors

SIZES = (0.8, 0.1, 0.1)


def imbalanced(n_a=600, n_b=300, n_c=100):
    return np.repeat([0, 1, 2], [n_a, n_b, n_c])


def test_stratified_keeps_each_class_in_proportion_and_is_reproducible():
    strata = imbalanced()
    usable = np.ones(len(strata), bool)
    usable[:5] = False
    split = stratified(strata, usable, SIZES, random_state=0)
    assert (split[:5] == -1).all()
    for cls, n in zip([0, 1, 2], [595, 300, 100], strict=True):
        counts = np.bincount(split[(strata == cls) & usable], minlength=3)
        np.testing.assert_allclose(counts / n, SIZES, atol=0.02)
    np.testing.assert_array_equal(split, stratified(strata, usable, SIZES, random_state=0))
    assert not np.array_equal(split, stratified(strata, usable, SIZES, random_state=1))
    no_validation = stratified(strata, usable, (0.9, 0.0, 0.1), random_state=0)
    assert set(no_validation[usable]) == {0, 2}


def test_stratified_too_small_for_every_split():
    with pytest.raises(SplitError, match="cannot be split"):
        stratified(np.repeat(np.arange(20), 3), np.ones(60, bool), SIZES, random_state=0)


def test_grouped_holds_out_whole_groups():
    rng = np.random.default_rng(0)
    donors = pd.Series(rng.choice([f"d{i}" for i in range(20)], 2000), name="donor")
    usable = np.ones(2000, bool)
    split = grouped(donors, usable, SIZES, random_state=0)
    per_donor = pd.DataFrame({"donor": donors, "split": split}).groupby("donor")["split"]
    assert (per_donor.nunique() == 1).all()  # no donor in two splits
    assert sorted(per_donor.first().value_counts().to_dict().items()) == [(0, 16), (1, 2), (2, 2)]
    np.testing.assert_array_equal(split, grouped(donors, usable, SIZES, random_state=0))
    assert not np.array_equal(split, grouped(donors, usable, SIZES, random_state=3))
    with pytest.raises(SplitError, match="2 group\\(s\\)"):
        grouped(pd.Series(["a", "b"] * 5, name="donor"), np.ones(10, bool), SIZES, 0)


def test_split_column_is_honoured():
    column = pd.Series(["train", "test", None, "validation", "train"], name="split")
    usable = np.array([True, True, True, True, False])
    np.testing.assert_array_equal(from_column(column, usable), [0, 2, -1, 1, -1])
    with pytest.raises(SplitError, match=r"holds \['valid'\]"):
        from_column(pd.Series(["train", "valid"], name="split"), np.ones(2, bool))
    categorical = as_categorical(np.array([0, 2, -1]))
    assert list(categorical.categories) == ["train", "validation", "test"]
    assert categorical.isna().tolist() == [False, False, True]


def test_class_order_is_deterministic():
    codes, classes = encode(pd.Series(["T", "B", np.nan, "NK", "B"]))
    assert classes == ["B", "NK", "T"] and codes.tolist() == [2, 0, -1, 1, 0]
    categorical = pd.Series(pd.Categorical(["x", "y"], categories=["y", "unused", "x"]))
    assert encode(categorical)[1] == ["y", "x"]  # category order, unused dropped


def test_label_errors_name_the_problem():
    obs = pd.DataFrame({"a": ["x"] * 5 + ["y"] * 2, "b": ["x"] * 7})
    with pytest.raises(LabelError, match=r"'y' \(2 cells\)"):
        encode_labels(obs, ["a"], min_per_class=3)
    with pytest.raises(LabelError, match="only the class 'x'"):
        encode_labels(obs, ["b"])
    with pytest.raises(KeyError, match="no label column 'c'"):
        encode_labels(obs, ["c"])


def test_class_weights():
    codes = np.array([0] * 6 + [1] * 2 + [-1] * 3)
    # sklearn's "balanced": n / (classes × count) = 8 / (3 × 6), 8 / (3 × 2); absent class 1
    np.testing.assert_allclose(balanced_weights(codes, 3).numpy(), [8 / 18, 8 / 6, 1.0])
    tasks = {"t": ["a", "b", "c"]}
    (given,) = class_weight_tensors({"b": 5.0}, codes[:, None], tasks)
    np.testing.assert_allclose(given.numpy(), [1.0, 5.0, 1.0])
    assert class_weight_tensors(None, codes[:, None], tasks) is None
    with pytest.raises(ValueError, match=r"names \['z'\], not classes of 't'"):
        class_weight_tensors({"z": 2.0}, codes[:, None], tasks)
