"""Label transfer: how well simple classifiers trained on some cells label the others.

A k-nearest-neighbour classifier and a logistic regression (on standardised dimensions) are
trained on one part of the cells and scored on the rest (accuracy and macro-F1, every label
of the test cells counting equally, labels never seen in training included). With batches,
the split is by batch, so a probe is never tested on a batch it was trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PROBE_NEIGHBORS = 15


def probe_splits(
    labels: np.ndarray,
    groups: np.ndarray | None,
    *,
    n_seeds: int = 3,
    test_size: float = 0.25,
    seed: int = 0,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Train/test index pairs and how they were drawn.

    With ``groups`` of at most ``n_seeds`` batches, every batch is held out once
    (leave-one-batch-out); with more, ``n_seeds`` random draws of about ``test_size`` of the
    batches. Without groups, ``n_seeds`` label-stratified random splits (plain random when a
    label has a single cell).
    """
    from sklearn.model_selection import (
        GroupShuffleSplit,
        LeaveOneGroupOut,
        ShuffleSplit,
        StratifiedShuffleSplit,
    )

    index = np.zeros(len(labels))
    if groups is not None and len(np.unique(groups)) >= 2:
        n_groups = len(np.unique(groups))
        if n_groups <= n_seeds:
            splits = list(LeaveOneGroupOut().split(index, labels, groups))
            return splits, f"leave-one-batch-out ({n_groups} batches)"
        splitter = GroupShuffleSplit(n_splits=n_seeds, test_size=test_size, random_state=seed)
        splits = list(splitter.split(index, labels, groups))
        return splits, f"{n_seeds} random splits by batch (test ≈{test_size:.0%} of batches)"
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= 2:
        splitter = StratifiedShuffleSplit(n_splits=n_seeds, test_size=test_size, random_state=seed)
        how = f"{n_seeds} label-stratified random splits (test {test_size:.0%})"
    else:
        splitter = ShuffleSplit(n_splits=n_seeds, test_size=test_size, random_state=seed)
        how = f"{n_seeds} random splits (test {test_size:.0%})"
    return list(splitter.split(index, labels)), how


def _subsample(train: np.ndarray, max_train: int | None, rng) -> np.ndarray:
    if max_train is None or len(train) <= max_train:
        return train
    return np.sort(rng.choice(train, max_train, replace=False))


def probe_scores(
    values: np.ndarray,
    labels: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    max_train: int | None = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy and macro-F1 of the two probes over ``splits``: mean and sd (one row each).

    Parameters
    ----------
    values
        Cells × dimensions.
    labels
        One label per cell.
    splits
        From :func:`probe_splits`.
    max_train
        Train on at most this many cells of each split (a random subset; bounds the logistic
        regression's time on large data).

    Returns
    -------
    Columns ``metric`` (``kNN accuracy``, ``kNN macro F1``, ``LogReg accuracy``,
    ``LogReg macro F1``), ``group`` (``probe``), ``value`` (mean over splits), ``sd``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    values = np.asarray(values, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {}
    for train, test in splits:
        train = _subsample(train, max_train, rng)
        models = {
            "kNN": KNeighborsClassifier(n_neighbors=min(PROBE_NEIGHBORS, len(train))),
            "LogReg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        }
        for name, model in models.items():
            if len(np.unique(labels[train])) < 2:  # one class: it predicts that class
                predicted = np.full(len(test), labels[train][0])
            else:
                predicted = model.fit(values[train], labels[train]).predict(values[test])
            truth = labels[test]
            present = np.unique(truth)  # macro-F1 over the test cells' labels
            scores.setdefault(f"{name} accuracy", []).append(accuracy_score(truth, predicted))
            scores.setdefault(f"{name} macro F1", []).append(
                f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
            )
    rows = [
        (
            metric,
            "probe",
            float(np.mean(v)),
            float(np.std(v, ddof=1)) if len(v) > 1 else np.nan,
        )
        for metric, v in scores.items()
    ]
    return pd.DataFrame(rows, columns=["metric", "group", "value", "sd"])
