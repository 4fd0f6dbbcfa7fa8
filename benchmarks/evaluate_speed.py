"""Wall time of ``scgf.tl.evaluate`` on 10k and 100k cells, against scib-metrics alone.

Run: ``python -m benchmarks.evaluate_speed`` (10k and 100k cells) or ``--quick`` (10k cells
only, kBET left out), ``--cells 5000 20000`` for other sizes.

Cells are resampled from the real ``pbmc_ifnb_kang2018_2000`` (labels ``cell_type``, batch
``condition``) by binomial count thinning (keep probability uniform in [0.3, 1]). Standing in
for Geneformer's embedding: a 256-dimensional random projection of the log-normalised
expression (a real function of each cell, so it passes the provenance check; its scores mean
nothing). ``scgf.tl.evaluate`` scores it and the two PCA baselines it computes (bio and batch
metrics, probes with two batch folds); the baseline is the plain scib-metrics ``Benchmarker``
with its own defaults (pynndescent neighbours) on the same three embeddings, given the PCAs:
what a user would run by hand, without baselines computed, provenance checks or probes.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import scgf
from benchmarks._data import SHARED

SOURCE = SHARED / "data" / "pbmc_ifnb_kang2018_2000.h5ad"


def resampled(n_cells: int, seed: int = 0) -> ad.AnnData:
    """``n_cells`` real cells drawn with replacement, counts thinned, labels kept."""
    real = ad.read_h5ad(SOURCE)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, real.n_obs, n_cells)
    rows = real.X.tocsr()[picks]
    keep = np.repeat(rng.uniform(0.3, 1.0, n_cells), np.diff(rows.indptr))
    data = rng.binomial(rows.data.astype(np.int64), keep).astype(np.float32)
    counts = sp.csr_matrix((data, rows.indices, rows.indptr), shape=rows.shape)
    counts.eliminate_zeros()
    obs = real.obs.iloc[picks][["cell_type", "condition"]].reset_index(drop=True)
    obs.index = [f"cell{i}" for i in range(n_cells)]
    adata = ad.AnnData(counts, obs=obs, var=real.var[[]].copy())
    # The stand-in embedding: a random projection of log-normalised expression.
    norm = counts.multiply(1e4 / np.maximum(counts.sum(axis=1), 1)).tocsr()
    norm.data = np.log1p(norm.data)
    projection = rng.standard_normal((adata.n_vars, 256)).astype(np.float32) / 16
    adata.obsm["X_geneformer"] = np.asarray(norm @ projection, dtype=np.float32)
    return adata


def scib_alone(adata: ad.AnnData, skip: tuple[str, ...]) -> float:
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    keys = ["X_geneformer", "X_pca_hvg", "X_pca_unintegrated"]
    batch = BatchCorrection(**{k: False for k in skip if hasattr(BatchCorrection, k)})
    start = time.perf_counter()
    bench = Benchmarker(
        adata,
        batch_key="condition",
        label_key="cell_type",
        embedding_obsm_keys=keys,
        bio_conservation_metrics=BioConservation(),
        batch_correction_metrics=batch,
        pre_integrated_embedding_obsm_key="X_pca_unintegrated",
        progress_bar=False,
    )
    bench.prepare()
    bench.benchmark()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--quick", action="store_true", help="10k cells, without kBET")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="time scgf.tl.evaluate only (halves a long run at 100k cells)",
    )
    parser.add_argument(
        "--skip-metrics",
        nargs="+",
        default=[],
        help="leave these scib-metrics metrics out (e.g. the O(n²) silhouettes at 100k cells: "
        "isolated_labels silhouette_label bras)",
    )
    args = parser.parse_args()
    sizes = [10_000] if args.quick else args.cells
    skip = (*(("kbet_per_label",) if args.quick else ()), *args.skip_metrics)
    scgf.settings.verbosity = "warning"
    logging.getLogger("scib_metrics").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="PCR comparison score is negative")
    # Compile scib-metrics' jax kernels once outside the timings (a first call's cost).
    warm = resampled(300, seed=1)
    scgf.tl.evaluate(warm, "cell_type", batch_key="condition", skip_metrics=skip)
    rows = []
    for n in sizes:
        adata = resampled(n)
        start = time.perf_counter()
        scgf.tl.evaluate(adata, "cell_type", batch_key="condition", skip_metrics=skip)
        scgf_s = time.perf_counter() - start
        plain_s = np.nan if args.no_baseline else scib_alone(adata, skip)
        status = scgf.get.evaluation_df(adata, provenance=True)["status"].tolist()
        rows.append(
            {
                "cells": n,
                "embeddings": 3,
                "scgf.tl.evaluate s": round(scgf_s, 1),
                "scib-metrics alone s": round(plain_s, 1),
                "ratio": round(scgf_s / plain_s, 2),
                "provenance": ",".join(status),
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
