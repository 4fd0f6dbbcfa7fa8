"""Label columns to class ids: a deterministic class order, missing labels left out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ... import _logging

MISSING = -1  # a cell without a label (for one task)


class LabelError(ValueError):
    """A label column cannot be trained on (missing, a single class, a class too small)."""


def label_keys_of(label_key: str | Sequence[str]) -> list[str]:
    """``label_key`` as a list of distinct column names (one per task)."""
    keys = [label_key] if isinstance(label_key, str) else [str(k) for k in label_key]
    if not keys:
        raise LabelError("label_key is empty; name the obs column(s) holding the labels.")
    if len(set(keys)) < len(keys):
        raise LabelError(f"label_key={keys} names a column more than once.")
    return keys


def check_columns(obs: pd.DataFrame, keys: Sequence[str]) -> None:
    """Every label column exists."""
    missing = [k for k in keys if k not in obs.columns]
    if missing:
        shown = ", ".join(map(repr, list(obs.columns)[:12]))
        raise KeyError(
            f"adata.obs has no label column {', '.join(map(repr, missing))}; it has "
            f"{shown or 'no columns'}. Pass label_key= naming the column with the cell labels."
        )


def encode(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class ids of one label column and the class names in id order.

    The order is deterministic: a categorical column keeps its category order (unused
    categories dropped), anything else is sorted by the labels' text. (The reference numbers
    classes in Python ``set`` order, which changes between runs for string labels.) Missing
    labels (NaN/None) get :data:`MISSING`.
    """
    missing = column.isna().to_numpy()
    if isinstance(column.dtype, pd.CategoricalDtype):
        used = set(column[~missing].astype(str))
        classes = [str(c) for c in column.cat.categories if str(c) in used]
    else:
        classes = sorted({str(v) for v in column[~missing]})
    lookup = {c: i for i, c in enumerate(classes)}
    text = column.astype(object).where(~missing, None)
    codes = np.array([MISSING if m else lookup[str(v)] for v, m in zip(text, missing, strict=True)])
    return codes.astype(np.int64), classes


def encode_labels(
    obs: pd.DataFrame, keys: Sequence[str], *, min_per_class: int = 1
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Encode every task's labels; check each task is learnable.

    Parameters
    ----------
    obs
        The cells' annotations.
    keys
        One label column per task.
    min_per_class
        Cells each class needs (the number of splits a stratified split puts it in).

    Returns
    -------
    ``codes`` (n_cells, n_tasks) with :data:`MISSING` for cells without a label, and
    ``{task: classes}``.
    """
    check_columns(obs, keys)
    codes, tasks = [], {}
    for key in keys:
        task_codes, classes = encode(obs[key])
        n_missing = int((task_codes == MISSING).sum())
        if n_missing:
            _logging.warn(
                f"{n_missing} of {len(task_codes)} cells have no label in obs[{key!r}] "
                "(NaN); they are left out of training and evaluation for this task."
            )
        if len(classes) < 2:
            found = f"only the class {classes[0]!r}" if classes else "no labels at all"
            raise LabelError(
                f"obs[{key!r}] has {found}: a classifier needs at least 2 classes. Pass a "
                "label_key with several classes, or add cells of other classes."
            )
        counts = np.bincount(task_codes[task_codes != MISSING], minlength=len(classes))
        small = [(c, int(n)) for c, n in zip(classes, counts, strict=True) if n < min_per_class]
        if small:
            listed = ", ".join(f"{c!r} ({n} cells)" for c, n in small)
            raise LabelError(
                f"obs[{key!r}] has classes with too few cells to split: {listed}; a stratified "
                f"train/validation/test split needs at least {min_per_class} cells per class. "
                "Remove or merge these classes (e.g. adata[adata.obs[key] != ...]), or give "
                "your own split with split_key=."
            )
        codes.append(task_codes)
        tasks[key] = classes
    return np.stack(codes, axis=1), tasks
