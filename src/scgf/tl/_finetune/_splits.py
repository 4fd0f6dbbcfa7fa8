"""Train / validation / test splits of the labelled cells: stratified, grouped, or given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
UNUSED = -1


class SplitError(ValueError):
    """The cells cannot be split as asked (sizes, a split column's values, too few groups)."""


def check_sizes(split_sizes: Sequence[float]) -> tuple[float, float, float]:
    """``split_sizes`` as (train, validation, test) fractions summing to 1, train > 0."""
    sizes = tuple(float(s) for s in split_sizes)
    if len(sizes) != 3 or any(s < 0 for s in sizes) or not np.isclose(sum(sizes), 1.0):
        raise SplitError(
            f"split_sizes={tuple(split_sizes)}; give three non-negative fractions (train, "
            "validation, test) summing to 1, e.g. (0.8, 0.1, 0.1)."
        )
    if sizes[0] == 0:
        raise SplitError("split_sizes gives no cells to train on; its first entry must be > 0.")
    return sizes  # type: ignore[return-value]


def from_column(column: pd.Series, usable: np.ndarray) -> np.ndarray:
    """Split ids from a user column holding ``train``/``validation``/``test`` (NaN: unused)."""
    text = column.astype(object)
    present = ~column.isna().to_numpy()
    values = set(text[present].astype(str))
    unknown = values - set(SPLITS)
    if unknown:
        raise SplitError(
            f"obs[{column.name!r}] holds {sorted(unknown)}; a split column may hold only "
            "'train', 'validation', 'test' (or NaN for cells to leave out)."
        )
    out = np.full(len(column), UNUSED, dtype=np.int64)
    for i, name in enumerate(SPLITS):
        out[present & (text.astype(str).to_numpy() == name)] = i
    out[~usable] = UNUSED
    if not (out == 0).any():
        raise SplitError(f"obs[{column.name!r}] marks no labelled cell 'train'.")
    return out


def stratified(
    strata: np.ndarray, usable: np.ndarray, sizes: Sequence[float], random_state: int
) -> np.ndarray:
    """Stratified split of the ``usable`` cells by ``strata`` (class ids): test first, then
    validation from the rest, each class in proportion (sklearn ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    cells = np.flatnonzero(usable)
    out = np.full(len(usable), UNUSED, dtype=np.int64)
    train, validation, test = sizes
    needed = 1 + (validation > 0) + (test > 0)
    strata = _merge_small(np.asarray(strata), cells, needed)
    try:
        rest, test_cells = cells, cells[:0]
        if test > 0:
            rest, test_cells = train_test_split(
                cells, test_size=test, stratify=strata[cells], random_state=random_state
            )
        train_cells, validation_cells = rest, rest[:0]
        if validation > 0:
            train_cells, validation_cells = train_test_split(
                rest,
                test_size=validation / (train + validation),
                stratify=strata[rest],
                random_state=random_state,
            )
    except ValueError as err:  # sklearn: a split smaller than the number of classes, …
        raise SplitError(
            f"The {len(cells)} labelled cells cannot be split {tuple(sizes)} with every class "
            f"in each split ({err}). Use larger split fractions, fewer classes, more cells, or "
            "give your own split with split_key=."
        ) from None
    out[train_cells], out[validation_cells], out[test_cells] = 0, 1, 2
    return out


def _merge_small(strata: np.ndarray, cells: np.ndarray, needed: int) -> np.ndarray:
    """Strata with fewer than ``needed`` cells (e.g. cells without the first task's label in
    a multi-task split) pooled together, and into the largest stratum if still too small."""
    strata = strata.copy()
    values, counts = np.unique(strata[cells], return_counts=True)
    small = values[counts < needed]
    if len(small) == 0:
        return strata
    pooled = np.isin(strata, small)
    strata[pooled] = strata.max() + 1
    if pooled[cells].sum() < needed:
        strata[pooled] = values[np.argmax(counts)]
    return strata


def grouped(
    groups: pd.Series, usable: np.ndarray, sizes: Sequence[float], random_state: int
) -> np.ndarray:
    """Group-held-out split: every group (e.g. donor) in exactly one split, the fractions
    counted in groups (sklearn ``GroupShuffleSplit``)."""
    from sklearn.model_selection import GroupShuffleSplit

    if groups[usable].isna().any():
        raise SplitError(
            f"obs[{groups.name!r}] has NaN for labelled cells; every cell needs a group."
        )
    cells = np.flatnonzero(usable)
    names = groups.astype(str).to_numpy()
    n_groups = len(set(names[cells]))
    train, validation, test = sizes
    needed = 1 + (validation > 0) + (test > 0)
    if n_groups < needed:
        raise SplitError(
            f"obs[{groups.name!r}] has {n_groups} group(s) among the labelled cells, too few "
            f"to hold out whole groups in {needed} splits; give more groups or split_key=."
        )
    out = np.full(len(usable), UNUSED, dtype=np.int64)

    def split_off(pool: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        n_pool = len(set(names[pool]))
        n_out = min(max(1, round(fraction * n_pool)), n_pool - 1)
        splitter = GroupShuffleSplit(n_splits=1, test_size=n_out, random_state=random_state)
        keep, held = next(splitter.split(pool, groups=names[pool]))
        return pool[keep], pool[held]

    rest, test_cells = cells, cells[:0]
    if test > 0:
        rest, test_cells = split_off(cells, test)
    train_cells, validation_cells = rest, rest[:0]
    if validation > 0:
        train_cells, validation_cells = split_off(rest, validation / (train + validation))
    out[train_cells], out[validation_cells], out[test_cells] = 0, 1, 2
    return out


def as_categorical(split: np.ndarray) -> pd.Categorical:
    """Split ids as the categorical written to ``obs`` (NaN for unused cells)."""
    return pd.Categorical.from_codes(np.where(split >= 0, split, -1), categories=list(SPLITS))
