"""Where token matrices go: into memory, or streamed into a backed ``.h5ad`` file."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._anndata import PARTIAL_GROUP, drop_partial, writable_file


def _clean_params(params: dict) -> dict:
    """Drop ``None`` values, which ``.h5ad`` files cannot store."""
    return {k: v for k, v in params.items() if v is not None}


class TokenWriter:
    """Collects token chunks and stores them under ``obsm[key]`` and ``uns[key]``.

    On an AnnData backed by a writable file, chunks are appended to the file as they come
    (bounded memory) under a temporary name that replaces ``obsm[key]`` only on success, so a
    failed run leaves the file as it was.
    """

    def __init__(self, adata: ad.AnnData, key: str, context: int, store: bool, stream: bool):
        self.adata, self.key, self.context, self.store = adata, key, context, store
        self.stream = stream
        self.pieces: list[sp.csr_matrix] = []
        self.dataset = None
        self.n_empty = 0
        self._partial = f"{PARTIAL_GROUP}/tokenize_{key}"

    @classmethod
    def for_target(cls, adata: ad.AnnData, key: str, context: int, *, stream: bool) -> TokenWriter:
        """A writer for ``adata``; streams to disk when ``adata`` is backed in ``r+`` mode."""
        return cls(adata, key, context, store=stream, stream=stream and writable_file(adata))

    def add(self, chunk: sp.csr_matrix) -> None:
        """Append the tokens of the next cells."""
        self.n_empty += int((np.diff(chunk.indptr) == 0).sum())
        if not self.stream:
            self.pieces.append(chunk)
            return
        handle = self.adata.file._file
        if self.dataset is None:
            if self._partial in handle:
                del handle[self._partial]
            ad.io.write_elem(handle.require_group(PARTIAL_GROUP), f"tokenize_{self.key}", chunk)
            self.dataset = ad.io.sparse_dataset(handle[self._partial])
        else:
            self.dataset.append(chunk)

    def abort(self) -> None:
        """Forget a failed run: drop the partial group from the file."""
        self.pieces.clear()
        if self.stream and self.dataset is not None:
            drop_partial(self.adata.file._file, self._partial)
            self.dataset = None

    def finish(self, params: dict):
        """Store the tokens and parameters; returns the token matrix."""
        params = _clean_params(params)
        if not self.stream:
            tokens = (
                sp.vstack(self.pieces, format="csr")
                if self.pieces
                else sp.csr_matrix((0, self.context), dtype=np.int32)
            )
            if self.store:
                self.adata.obsm[self.key] = tokens
                self.adata.uns[self.key] = {"params": params}
            return tokens
        if self.dataset is None:  # no cells at all
            self.add(sp.csr_matrix((0, self.context), dtype=np.int32))
        handle = self.adata.file._file
        group = handle.require_group("obsm")
        if self.key in group:
            del group[self.key]
        handle.move(self._partial, f"obsm/{self.key}")
        drop_partial(handle)
        tokens = ad.io.sparse_dataset(group[self.key])
        self.adata.obsm[self.key] = tokens
        self.adata.uns[self.key] = {"params": params}
        uns = handle.require_group("uns")
        if self.key in uns:
            del uns[self.key]
        ad.io.write_elem(uns, self.key, {"params": params})
        return tokens
