"""Small helpers the AnnData shells share: modality selection, layers, chunked reads."""

from __future__ import annotations

from collections.abc import Iterator

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._keys import PARTIAL_GROUP

try:  # MuData is optional at runtime even though it is a dependency.
    from mudata import MuData
except ImportError:  # pragma: no cover
    MuData = None  # type: ignore[assignment,misc]


def rna_modality(data: ad.AnnData) -> ad.AnnData:
    """The AnnData to work on: ``data`` itself, or the RNA modality of a MuData."""
    if MuData is not None and isinstance(data, MuData):
        for name in ("rna", "RNA", "gex", "GEX"):
            if name in data.mod:
                return data.mod[name]
        raise ValueError(
            f"This MuData has modalities {list(data.mod)} and none is named 'rna'; pass the "
            "AnnData of the RNA modality itself, e.g. mdata.mod['my_rna']."
        )
    if not isinstance(data, ad.AnnData):
        raise TypeError(f"Expected an AnnData or MuData, got {type(data).__name__}.")
    return data


def count_matrix(adata: ad.AnnData, layer: str | None):
    """``X`` or a named layer, checked to exist."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass layer= naming the layer with raw counts.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"No layer {layer!r}; adata has layers {list(adata.layers)}.")
    return adata.layers[layer]


def writable_file(adata: ad.AnnData) -> bool:
    """Whether ``adata`` is backed by a file opened for writing (``backed="r+"``)."""
    return adata.isbacked and adata.file._file.mode == "r+"


def drop_partial(handle, path: str = "") -> None:
    """Delete ``path`` (if given) and the partial-results group once it is empty."""
    if path and path in handle:
        del handle[path]
    if PARTIAL_GROUP in handle and not len(handle[PARTIAL_GROUP]):
        del handle[PARTIAL_GROUP]


def iter_row_chunks(matrix, chunk_size: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, CSR chunk)`` over the rows of a dense, sparse or backed matrix.

    CSC input is converted to CSR once (slicing CSC rows is quadratic); backed matrices are
    read one chunk at a time, so memory stays bounded by the chunk.
    """
    if sp.issparse(matrix) and matrix.format != "csr":
        matrix = matrix.tocsr()
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        chunk = matrix[start:stop]
        if not sp.issparse(chunk):
            chunk = sp.csr_matrix(np.asarray(chunk))
        yield start, stop, chunk.tocsr()


def as_csr(block) -> sp.csr_matrix:
    """A block of rows (CSR, backed rows or dense) as an in-memory CSR matrix."""
    return block.tocsr() if sp.issparse(block) else sp.csr_matrix(block)


def row_lengths(matrix) -> np.ndarray:
    """Stored entries per row of a CSR matrix or an AnnData backed sparse dataset (a token
    matrix's cell lengths), without reading the entries of a backed one."""
    indptr = matrix.indptr if sp.issparse(matrix) else matrix.group["indptr"][()]
    return np.diff(np.asarray(indptr))
