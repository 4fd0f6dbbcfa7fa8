"""Honest baselines to score an embedding against: PCAs of the cells' own expression.

Both are computed by scanpy on a private copy of the counts (``adata.X`` is never touched):

- ``X_pca_hvg``: PCA of the log-normalised highly variable genes (``normalize_total``,
  ``log1p``, ``highly_variable_genes(n_top_genes=2000)``, ``pca``), the baseline independent
  evaluations found Geneformer embeddings often below.
- ``X_pca_unintegrated``: PCA of all log-normalised genes, the "unintegrated" embedding
  scib-metrics compares batch correction against (its ``pcr_comparison``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

HVG = "X_pca_hvg"
UNINTEGRATED = "X_pca_unintegrated"
BASELINES = (HVG, UNINTEGRATED)


def _looks_like_counts(matrix) -> bool:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    sample = values[:200_000]
    return bool(np.all(sample >= 0) and np.allclose(sample, np.round(sample)))


def expression_pca(
    matrix, *, hvg: bool, n_comps: int = 50, n_top_genes: int = 2000, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """A PCA of log-normalised expression (cells × ``n_comps``, float32) and its parameters.

    Parameters
    ----------
    matrix
        Raw counts, cells × genes (sparse or dense); copied, never changed. Values that are
        not whole numbers are taken as already log-normalised.
    hvg
        Restrict to the ``n_top_genes`` most variable genes (Seurat flavour).
    """
    import anndata as ad
    import scanpy as sc

    matrix = matrix.astype(np.float32, copy=True)
    work = ad.AnnData(sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix))
    counts = _looks_like_counts(work.X)
    if counts:
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    n_top = min(n_top_genes, work.n_vars)
    if hvg and n_top < work.n_vars:
        sc.pp.highly_variable_genes(work, n_top_genes=n_top, flavor="seurat")
        work = work[:, work.var["highly_variable"].to_numpy()].copy()
    comps = max(1, min(n_comps, work.n_obs - 1, work.n_vars - 1))
    sc.pp.pca(work, n_comps=comps, random_state=seed)
    params = {
        "tool": "scgf.tl.evaluate",
        "baseline": "hvg" if hvg else "unintegrated",
        "normalised": "normalize_total(1e4) + log1p" if counts else "as given (not counts)",
        "n_top_genes": n_top if hvg else "all",
        "n_genes": int(work.n_vars),
        "n_comps": int(comps),
        "seed": seed,
    }
    return np.asarray(work.obsm["X_pca"], dtype=np.float32), params
