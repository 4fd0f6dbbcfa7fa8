"""A direct, slow, per-cell implementation of the reference tokenizer (spec §1.4–1.6).

It follows the reference's steps literally: collapse IDs through the filtered mapping
dictionary (summing only when distinct IDs collapse), keep token-dictionary genes, divide a
chunk of the sparse matrix by ``n_counts``, times 10000, divided by the medians (scipy's
operators, as the reference uses them), then for each cell ``np.argsort(-v)`` over its
non-zero entries in column order, truncate and add special tokens. It also returns each
token's score so that tests can tell ties apart.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import scipy.sparse as sp


def load_reference_dicts(dicts_dir, tag):
    def load(stem):
        with open(dicts_dir / f"{stem}_{tag}.pkl", "rb") as handle:
            return pickle.load(handle)

    tokens = load("token_dictionary")
    medians = load("gene_median_dictionary")
    mapping = {k: v for k, v in load("ensembl_mapping_dict").items() if v in tokens}
    return tokens, medians, mapping


def reference_tokenize(adata, ids, tokens, medians, mapping, chunk=512):
    """Per cell, untruncated ``(token ids, scores)`` in the reference's order (empty cells too)."""
    ids = pd.Series(np.asarray(ids, dtype=object))
    in_map = ids[[isinstance(i, str) and i in mapping for i in ids]]
    collapsed = ids.map(lambda i: mapping.get(i.upper()) if isinstance(i, str) else None)
    X = sp.csr_matrix(adata.X)
    if in_map.nunique() != collapsed[in_map.index].nunique():
        keep = collapsed.notna().to_numpy()
        names = collapsed[keep].to_numpy()
        X = X[:, keep]
        dup = pd.Series(names).duplicated(keep=False).to_numpy()
        unique_cols = np.flatnonzero(~dup)
        order = list(dict.fromkeys(names[dup]))
        summed = [X[:, np.flatnonzero(names == n)].sum(axis=1) for n in order]
        X = sp.hstack([X[:, unique_cols], sp.csr_matrix(np.hstack(summed)) if summed else None])
        X = sp.csr_matrix(X, dtype=adata.X.dtype)
        collapsed = pd.Series(list(names[unique_cols]) + order)
    genes = [i for i, g in enumerate(collapsed) if isinstance(g, str) and g in tokens]
    norm = np.array([medians[collapsed[i]] for i in genes])
    tok = np.array([tokens[collapsed[i]] for i in genes])
    n_counts = adata.obs["n_counts"].to_numpy()
    out = []
    for start in range(0, adata.n_obs, chunk):
        rows = slice(start, min(start + chunk, adata.n_obs))
        view = X[rows][:, genes]
        scaled = sp.csr_matrix(view / n_counts[rows][:, None] * 10_000 / norm)
        scaled.sort_indices()
        for i in range(scaled.shape[0]):
            lo, hi = scaled.indptr[i], scaled.indptr[i + 1]
            values = scaled.data[lo:hi]
            nonzero = values != 0
            values, cols = values[nonzero], scaled.indices[lo:hi][nonzero]
            order = np.argsort(-values)
            out.append((tok[cols][order], values[order]))
    return out


def canonical(tokens, scores):
    """The reference order with ties broken by ascending token id (before truncation)."""
    order = np.lexsort((tokens, -scores))
    return tokens[order]
