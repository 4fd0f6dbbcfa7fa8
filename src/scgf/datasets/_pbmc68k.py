"""Raw counts of scanpy's bundled ``pbmc68k_reduced`` dataset, ready for tokenization."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp


def pbmc68k_reduced() -> ad.AnnData:
    """700 PBMCs × 765 genes of 10x "Fresh 68k PBMCs" (Zheng et al. 2017) as raw counts.

    scanpy ships this subsample (``scanpy.datasets.pbmc68k_reduced``) log-normalised only;
    the raw counts are rebuilt exactly as ``round(expm1(raw.X) * n_counts / 1e4)`` (all
    rounding residuals are below 0.1). It needs no download, so it suits quick tries and
    tests.

    Returns
    -------
    An AnnData with counts (float32 CSR) in ``X``, symbols as ``var_names``, ``obs``
    columns ``cell_type`` (the source's ``bulk_labels``), ``louvain``, ``phase`` and
    ``n_counts_all_genes`` (the original totals), and ``n_counts`` (totals over the 765 genes).
    """
    import scanpy as sc

    source = sc.datasets.pbmc68k_reduced()
    lognorm = source.raw.X.toarray() if sp.issparse(source.raw.X) else np.asarray(source.raw.X)
    totals = source.obs["n_counts"].to_numpy(dtype=np.float64)[:, None]
    counts = np.rint(np.expm1(lognorm.astype(np.float64)) * totals / 1e4).astype(np.float32)
    counts = sp.csr_matrix(counts)
    obs = source.obs[["louvain", "phase"]].copy()
    obs.insert(0, "cell_type", source.obs["bulk_labels"].to_numpy())
    obs["n_counts_all_genes"] = source.obs["n_counts"].to_numpy()
    obs["n_counts"] = np.asarray(counts.sum(axis=1)).ravel().astype(np.float32)
    return ad.AnnData(X=counts, obs=obs, var=source.raw.var[[]].copy())
