"""scib-metrics scores of embeddings: its ``Benchmarker`` with neighbours computed once here.

Nothing here computes a metric: every number comes from scib-metrics (bio conservation:
isolated labels, k-means NMI/ARI, label silhouette, cLISI; batch correction: BRAS (its batch
silhouette), iLISI, kBET, graph connectivity, PCR comparison; and its aggregate scores).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from ..._optional import import_optional

# The Benchmarker's neighbour counts (15, 50 and 90 nearest neighbours).
MAX_NEIGHBORS = 90
# Exact neighbours (sklearn) up to this many cells, scib-metrics' pynndescent above.
EXACT_NEIGHBORS_UP_TO = 20_000
BIO = "Bio conservation"
BATCH = "Batch correction"
AGGREGATES = {BIO: "aggregate", BATCH: "aggregate", "Total": "aggregate"}


def scib_metrics():
    """scib-metrics, or an ImportError naming the ``eval`` extra."""
    return import_optional("scib_metrics", feature="scgf.tl.evaluate")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence what scib-metrics and jax print on their own: jax's note that no GPU backend
    is installed, scib-metrics' per-label info lines ("pDC consists of a single batch") and its
    warning that a PCR comparison below zero is clipped to zero (the documented score)."""
    loggers = [logging.getLogger(n) for n in ("jax._src.xla_bridge", "scib_metrics")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING if lg.name == "scib_metrics" else logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PCR comparison score is negative")
        warnings.filterwarnings("ignore", message=".*jax.*GPU.*", category=UserWarning)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def neighbors(values: np.ndarray, k: int = MAX_NEIGHBORS, *, seed: int = 0):
    """k nearest neighbours of every row (self excluded) as scib-metrics' ``NeighborsResults``."""
    scib = scib_metrics()
    k = min(k, len(values) - 1)
    if len(values) > EXACT_NEIGHBORS_UP_TO:
        return scib.nearest_neighbors.pynndescent(values, n_neighbors=k, random_state=seed)
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(values).kneighbors(values)
    # The cell itself comes first (distance 0); duplicates may swap it with a twin.
    return scib.nearest_neighbors.NeighborsResults(
        indices=indices[:, 1:], distances=distances[:, 1:]
    )


def scib_scores(
    embeddings: dict[str, np.ndarray],
    neighbor_results: dict,
    labels: np.ndarray,
    batches: np.ndarray | None,
    unintegrated: np.ndarray | None,
    *,
    skip: Sequence[str] = (),
) -> pd.DataFrame:
    """scib-metrics' results of every embedding, as a tidy table.

    Parameters
    ----------
    embeddings
        Name → cells × dimensions (the same cells in the same order, all finite).
    neighbor_results
        Name → :func:`neighbors` of that embedding (computed once, shared with the checks).
    labels, batches
        Per cell; without ``batches`` only bio conservation is scored (every label then
        counts as isolated in scib-metrics' isolated-label score).
    unintegrated
        The unintegrated PCA for ``pcr_comparison`` (needed with ``batches``).
    skip
        scib-metrics metric names to leave out (``"kbet_per_label"``, ``"bras"``, …).

    Returns
    -------
    Columns ``embedding``, ``metric``, ``group`` (``bio``, ``batch`` or ``aggregate``),
    ``value``, ``sd`` (NaN: one run).
    """
    import anndata as ad

    scib_metrics()  # the install hint, if it is missing
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    bio = BioConservation(**{name: False for name in skip if hasattr(BioConservation, name)})
    batch = None
    if batches is not None:
        batch = BatchCorrection(**{n: False for n in skip if hasattr(BatchCorrection, n)})
    obs = pd.DataFrame(
        {
            "label": pd.Categorical(np.asarray(labels).astype(str)),
            "batch": pd.Categorical(
                np.asarray(batches).astype(str) if batches is not None else ["all"] * len(labels)
            ),
        },
        index=pd.RangeIndex(len(labels)).astype(str),
    )
    work = ad.AnnData(obs=obs)
    for name, values in embeddings.items():
        work.obsm[name] = np.asarray(values, dtype=np.float32)
    pre = "__unintegrated__"
    work.obsm[pre] = (
        np.asarray(unintegrated, dtype=np.float32)
        if unintegrated is not None
        else next(iter(work.obsm.values()))  # only pcr_comparison reads it (batch metrics)
    )
    by_array = [(work.obsm[name], neighbor_results[name]) for name in embeddings]

    def cached(values, k):
        for array, result in by_array:
            if values is array or (values.shape == array.shape and np.array_equal(values, array)):
                return result.subset_neighbors(min(k, result.indices.shape[1]))
        return neighbors(values, k)  # not reached: every embedding was given

    bench = Benchmarker(
        work,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=list(embeddings),
        bio_conservation_metrics=bio,
        batch_correction_metrics=batch,
        pre_integrated_embedding_obsm_key=pre,
        progress_bar=False,
    )
    with quiet():
        bench.prepare(neighbor_computer=cached)
        bench.benchmark()
        table = bench.get_results(min_max_scale=False)
    kinds = table.loc["Metric Type"]
    values = table.drop(index="Metric Type").astype(np.float64)
    rows = []
    for name in embeddings:
        for metric in values.columns:
            kind = kinds[metric]
            group = (
                "aggregate" if kind == "Aggregate score" else ("bio" if kind == BIO else "batch")
            )
            rows.append((name, metric, group, float(values.loc[name, metric]), np.nan))
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])
