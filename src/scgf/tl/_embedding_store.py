"""Where embeddings go: memory, or a backed file with progress saved for resuming."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np

from .._anndata import PARTIAL_GROUP, drop_partial, writable_file
from .._engine._distributed import sum_across

_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}


def _clean(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


class EmbeddingStore:
    """Collects per-chunk cell embeddings (and gene sums) and stores them at the end.

    On an AnnData backed by a writable file (single process), every chunk goes straight into
    ``scgf_partial/embed_{key}`` in the file together with the number of cells done and the run's
    parameters; a later call with the same parameters resumes from there. The partial group
    becomes ``obsm[key]`` only when the run completes.
    """

    def __init__(self, adata, key, hidden, params, genes, backed_group=None):
        self.adata, self.key, self.params = adata, key, _clean(params)
        self.genes = genes
        self.group = backed_group
        self.n_done = 0
        self.gene_sums = self.gene_counts = None
        if backed_group is None:
            self.values = np.zeros((adata.n_obs, hidden), dtype=np.float32)
            return
        self.n_done = int(backed_group.attrs.get("n_done", 0))
        if genes and "gene_sums" in backed_group:
            self.gene_sums = backed_group["gene_sums"][()]
            self.gene_counts = backed_group["gene_counts"][()]

    @property
    def persistent(self) -> bool:
        """Whether results go to a file (and a later call can resume)."""
        return self.group is not None

    @classmethod
    def open(
        cls,
        adata: ad.AnnData,
        key: str,
        hidden: int,
        params: dict,
        *,
        genes: bool,
        distributed: bool,
    ) -> EmbeddingStore:
        """A store for ``adata``: file-backed and resumable when ``adata`` is backed ``r+``."""
        writable = writable_file(adata) and not distributed
        if not writable:
            return cls(adata, key, hidden, params, genes)
        # Outside obsm, so that anndata never reads an unfinished run.
        partial = adata.file._file.require_group(PARTIAL_GROUP)
        name = f"embed_{key}"
        signature = json.dumps({**_clean(params), "genes": genes}, sort_keys=True)
        group = partial.get(name)
        if group is None or group.attrs.get("params") != signature:
            if group is not None:
                del partial[name]
            group = partial.create_group(name)
            group.attrs["params"] = signature
            group.attrs["n_done"] = 0
            group.create_dataset(
                "emb", shape=(adata.n_obs, hidden), dtype="float32", fillvalue=np.nan
            )
        return cls(adata, key, hidden, params, genes, backed_group=group)

    def write(self, start: int, values: np.ndarray, gene_state) -> None:
        """Store the embeddings of cells ``start …`` and the running gene sums."""
        stop = start + len(values)
        if gene_state is not None:
            self.gene_sums, self.gene_counts = gene_state
        if self.group is None:
            self.values[start:stop] = values
            self.n_done = stop
            return
        self.group["emb"][start:stop] = values
        if gene_state is not None:
            for name, array in (("gene_sums", self.gene_sums), ("gene_counts", self.gene_counts)):
                if name in self.group:
                    self.group[name][...] = array
                else:
                    self.group.create_dataset(name, data=array)
        self.group.attrs["n_done"] = stop
        self.group.file.flush()

    def finish(self, gene_embeddings: np.ndarray | None) -> None:
        """Put the results under ``obsm``/``varm``/``uns`` (and into the file when backed)."""
        uns = {"params": self.params}
        if self.group is None:
            self.adata.obsm[self.key] = sum_across(self.values)
            if gene_embeddings is not None:
                self.adata.varm[self.key] = gene_embeddings
            self.adata.uns[self.key] = uns
            return
        handle = self.adata.file._file
        obsm = handle["obsm"]
        if self.key in obsm:
            del obsm[self.key]
        obsm.move(f"{self.group.name}/emb", f"{obsm.name}/{self.key}")
        drop_partial(handle, self.group.name)
        dataset = obsm[self.key]
        dataset.attrs.update(_ARRAY_ATTRS)
        self.adata.obsm[self.key] = dataset
        self.adata.uns[self.key] = uns
        for group_name, value in (("uns", uns), ("varm", gene_embeddings)):
            if value is None:
                continue
            group = handle.require_group(group_name)
            if self.key in group:
                del group[self.key]
            ad.io.write_elem(group, self.key, value)
        if gene_embeddings is not None:
            self.adata.varm[self.key] = gene_embeddings
        handle.flush()
