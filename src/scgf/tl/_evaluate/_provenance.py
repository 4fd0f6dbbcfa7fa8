"""Do an embedding's rows belong to these cells, in this order?

Two checks, neither of which recomputes the embedding:

- **Recorded rows** (exact): a tool that writes an ``obsm`` key can record a *row signature*
  (:func:`row_signature`): the names of up to ``SIGNATURE_CELLS`` cells spread over the
  matrix and two fixed random projections of their rows. Any later ``adata`` holding some of
  those cells (a subset, a reordered copy, a file read back) must still give each of them the
  same row; a reordered, shuffled or foreign embedding does not.
- **Neighbourhood agreement** (statistical, for any embedding, recorded or not): the
  embedding's k-nearest-neighbour sets are compared with those of the cells' own expression
  (a PCA of their counts). A correct embedding, even a poor one, shares neighbours with the
  expression far more often than chance; a row-shuffled or foreign one does not. The chance
  level is measured by relabelling the cells at random (``n_null`` times).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

SIGNATURE_CELLS = 256
_PROJECTIONS = 2
# A recorded row matches when its projections agree to this fraction of the row's norm: exact
# copies agree to rounding, and float16/bfloat16 storage stays well inside it.
_RTOL = 1e-2
AGREEMENT_K = 15
# Below this many null standard deviations above chance the neighbourhoods are no better than
# a random relabelling of the cells.
MIN_Z = 5.0


def _projections(values: np.ndarray) -> np.ndarray:
    """Fixed pseudo-random unit projections of rows (the same for every call of a width)."""
    width = values.shape[1]
    basis = np.random.default_rng(width).standard_normal((width, _PROJECTIONS))
    basis /= np.linalg.norm(basis, axis=0, keepdims=True)
    values = np.asarray(values, dtype=np.float64)
    return np.column_stack([values @ basis, np.linalg.norm(values, axis=1)])


def row_signature(obs_names, values) -> dict:
    """A signature of an embedding's rows, to store beside it (``uns[key]["rows"]``).

    Parameters
    ----------
    obs_names
        The cells' names, in the embedding's row order.
    values
        The embedding (cells × dimensions; an array or an h5py dataset).

    Returns
    -------
    ``{"obs_names": names of up to SIGNATURE_CELLS cells, "values": their projections and
    norms}`` (arrays, writable to ``.h5ad``).
    """
    n = len(obs_names)
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, SIGNATURE_CELLS)).astype(np.int64))
    sample = np.asarray(values[rows] if len(rows) else np.zeros((0, values.shape[1])))
    return {
        "obs_names": np.asarray(pd.Index(obs_names)[rows].astype(str), dtype=object),
        "values": _projections(sample).astype(np.float64),
    }


def check_signature(signature, obs_names, values) -> tuple[str, str]:
    """Compare an embedding with its recorded :func:`row_signature`.

    Returns
    -------
    ``(status, detail)``: status ``"verified"``, ``"mismatch"`` or ``"no recorded cell"``
    (none of the recorded cells is in ``adata``: a subset that left them all out).
    """
    names = np.asarray(signature["obs_names"]).astype(str)
    recorded = np.asarray(signature["values"], dtype=np.float64)
    index = pd.Index(np.asarray(obs_names).astype(str))
    if not index.is_unique:
        return "not recorded", "obs_names are not unique, so recorded cells cannot be found"
    position = index.get_indexer(names)
    present = position >= 0
    if not present.any():
        return "no recorded cell", "none of the cells it recorded is in adata"
    now = _projections(np.asarray(values[np.sort(position[present])]))
    now = now[np.argsort(np.argsort(position[present]))]
    then = recorded[present]
    scale = np.maximum(then[:, -1:], 1e-12)
    close = np.abs(now - then) <= _RTOL * np.nan_to_num(scale, nan=1.0)
    bad = ~(close | (np.isnan(now) & np.isnan(then))).all(axis=1)  # NaN rows: cells untokenized
    if bad.any():
        return "mismatch", (
            f"{int(bad.sum())} of {int(present.sum())} recorded cells have other rows than "
            f"when it was written (e.g. {names[present][bad][0]!r}): the rows were reordered "
            "or replaced"
        )
    return "verified", f"{int(present.sum())} recorded cells have their own rows"


def _neighbour_matrix(indices: np.ndarray) -> sp.csr_matrix:
    n, k = indices.shape
    data = np.ones(n * k, dtype=np.float32)
    return sp.csr_matrix((data, indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def neighbour_agreement(
    indices: np.ndarray, reference: np.ndarray, *, n_null: int = 20, seed: int = 0
) -> tuple[float, float, float]:
    """How often an embedding's nearest neighbours are also the expression's.

    Parameters
    ----------
    indices, reference
        k-nearest-neighbour indices (cells × k, self excluded) of the embedding and of the
        reference (the same cells, the same k).
    n_null
        Random relabellings of the cells that give the chance level.

    Returns
    -------
    ``(agreement, chance, z)``: the mean fraction of shared neighbours, its mean under random
    relabelling, and how many null standard deviations it lies above that.
    """
    n, k = indices.shape
    ref = _neighbour_matrix(reference)
    observed = ref.multiply(_neighbour_matrix(indices)).sum() / (n * k)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_null):
        perm = rng.permutation(n)
        inverse = np.argsort(perm)
        # The embedding with its rows relabelled: cell i gets the neighbours of perm[i].
        relabelled = inverse[indices[perm]]
        null.append(ref.multiply(_neighbour_matrix(relabelled)).sum() / (n * k))
    null = np.asarray(null)
    spread = max(float(null.std(ddof=1)), 1e-12)
    return float(observed), float(null.mean()), float((observed - null.mean()) / spread)
