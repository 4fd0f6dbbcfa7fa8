"""Cross-validation over genes: stratified folds, each fold's held-out genes split into
validation and test, and the reference's optional balancing of a binary task (array kernels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import _logging

# The reference's split sizes {train 0.8, valid 0.1, test 0.1}: held-out genes go to test with
# probability test / (valid / (train + valid) + test) = 0.1 / (0.1 / 0.9 + 0.1) (spec §6.3).
TEST_FRACTION = 0.1 / (0.1 / 0.9 + 0.1)
BALANCED = (0.8, 1.25)  # the reference's accepted class-0 : class-1 occurrence ratio
BALANCE_TRIALS = 25


@dataclass(frozen=True)
class GeneFold:
    """One fold: indices (into the labelled genes) of its training, validation and test genes."""

    index: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def split_of(self, n_genes: int) -> np.ndarray:
        """Each labelled gene's split in this fold (``""`` for a gene left out by balancing)."""
        out = np.full(n_genes, "", dtype=object)
        out[self.train], out[self.validation], out[self.test] = "train", "validation", "test"
        return out


def gene_folds(
    labels: np.ndarray,
    n_folds: int,
    *,
    random_state: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> list[GeneFold]:
    """Stratified ``n_folds``-fold cross-validation over genes.

    As the reference: ``StratifiedKFold(n_folds, shuffle=True, random_state)``, and each
    fold's held-out genes split into validation and test by ``train_test_split`` stratified
    by class (unstratified where a class has a single held-out gene, which the reference
    cannot split), with the same ``random_state``. No gene is in two splits of a fold, and
    every gene is held out (validation or test) in exactly one fold.

    Parameters
    ----------
    labels
        Class id of every labelled gene.
    n_folds
        Number of folds (≥ 2); every class needs at least that many genes.
    random_state
        Seed of the fold assignment and of the validation/test split.
    test_fraction
        Share of a fold's held-out genes that go to test.

    Returns
    -------
    The folds.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    labels = np.asarray(labels)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds}; cross-validation needs at least 2 folds.")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    folds = []
    for k, (train, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        try:
            validation, test = train_test_split(
                held, test_size=test_fraction, stratify=labels[held], random_state=random_state
            )
        except ValueError:  # a class with one held-out gene cannot be stratified
            validation, test = train_test_split(
                held, test_size=test_fraction, random_state=random_state
            )
        folds.append(GeneFold(k, np.sort(train), np.sort(validation), np.sort(test)))
    return folds


def occurrence_ratio(labels: np.ndarray, occurrences: np.ndarray) -> float:
    """Class 0 : class 1 ratio of the genes' occurrences (cells expressing each gene)."""
    zero = float(occurrences[labels == 0].sum())
    one = float(occurrences[labels == 1].sum())
    return zero / one if one else np.inf


def balance_binary(
    genes: np.ndarray,
    labels: np.ndarray,
    occurrences: np.ndarray,
    *,
    random_state: int = 0,
) -> np.ndarray:
    """The reference's gene balancing for a binary task: drop genes of the over-represented
    class until its token occurrences are within 0.8–1.25× the other's.

    A class's weight in training is how often its genes occur in the training cells, not how
    many genes it has. When the class-0 : class-1 occurrence ratio ``r`` is outside
    [0.8, 1.25], up to 25 trials each drop ``max(1, ⌊n − n / (r·boost)⌋)`` random genes of the
    larger class (``n`` its genes; trial ``t`` seeded by ``(random_state, t)``), ``boost``
    growing by 1.1 while the ratio is still too high and shrinking by 0.9 once it
    overshoots, and the first balanced subset is kept. Otherwise, with a warning, the closer
    to balanced of the original set and the last trial's is kept.

    Parameters
    ----------
    genes
        Indices of the training genes.
    labels
        Class id (0 or 1) of each of ``genes``.
    occurrences
        How many training cells express each of ``genes``.
    random_state
        Seed.

    Returns
    -------
    The kept subset of ``genes`` (in their order).
    """
    genes, labels = np.asarray(genes), np.asarray(labels)
    occurrences = np.asarray(occurrences, dtype=np.float64)
    low, high = BALANCED
    original = occurrence_ratio(labels, occurrences)
    if low <= original <= high:
        return genes
    larger = 0 if original > high else 1
    members = np.flatnonzero(labels == larger)
    ratio, boost = original, 1.0
    keep = np.ones(len(genes), dtype=bool)
    for trial in range(BALANCE_TRIALS):
        excess = ratio if larger == 0 else 1.0 / ratio
        n = len(members)
        n_remove = min(n - 1, max(1, int(np.floor(n - n / (excess * boost)))))
        rng = np.random.default_rng([random_state, trial])
        keep = np.ones(len(genes), dtype=bool)
        keep[rng.choice(members, n_remove, replace=False)] = False
        ratio = occurrence_ratio(labels[keep], occurrences[keep])
        if low <= ratio <= high:
            return genes[keep]
        still_larger = ratio > high if larger == 0 else ratio < low
        boost *= 1.1 if still_larger else 0.9
    if abs(np.log(ratio)) >= abs(np.log(original)):
        keep[:], ratio = True, original
    _logging.warn(
        f"The two classes' genes could not be balanced within 0.8-1.25x occurrences in "
        f"{BALANCE_TRIALS} trials; training with a class-0 : class-1 ratio of {ratio:.2f}."
    )
    return genes[keep]
