"""Where embeddings go: memory, or a backed file, with progress saved beside it to resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np

from .._anndata import writable_file
from .._engine._distributed import sum_across
from .._resume import ProgressFolder

_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}


def _clean(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


def progress_folder(path: str | Path, key: str) -> Path:
    """The folder beside a backed file where an embedding run's progress is saved."""
    path = Path(path)
    return path.with_name(f"{path.name}.{key}.progress")


class EmbeddingStore:
    """Collects cell embeddings (and gene sums) batch by batch and stores them at the end.

    On an AnnData backed by a writable file (single process), progress is saved beside the
    file (:func:`progress_folder`, a :class:`scgf._resume.ProgressFolder`): each save writes
    one part atomically with the embeddings of the cells done since the last one (the running
    gene sums are saved beside it, replacing the previous ones), so that a run killed at any
    moment resumes from its last save. The folder records the run's fingerprint (cells,
    tokens, model, parameters); a later call with another fingerprint is refused, naming what
    differs (``restart=True`` discards it).
    The results go into the file's ``obsm``/``varm``/``uns`` only when the run completes.
    """

    def __init__(self, adata, key, hidden, params, genes, progress=None):
        self.adata, self.key, self.params = adata, key, _clean(params)
        self.genes = genes
        self.values_width = hidden
        self.progress = progress
        self.gene_sums = self.gene_counts = None
        self.pending_rows: list[np.ndarray] = []
        self.pending_values: list[np.ndarray] = []
        self.done = np.zeros(adata.n_obs, dtype=bool)
        if progress is None:
            # Zeros, so that summing the processes' stores merges torchrun shards; cells
            # without tokens are added as NaN rows.
            self.values = np.zeros((adata.n_obs, hidden), dtype=np.float32)
            return
        for part in progress.parts(keys=("rows",)):
            self.done[part["rows"]] = True
        state = progress.state()
        if state is not None:
            self.gene_sums, self.gene_counts = state["gene_sums"], state["gene_counts"]

    @property
    def persistent(self) -> bool:
        """Whether results go to a file (and a later call can resume)."""
        return self.progress is not None

    @classmethod
    def open(
        cls,
        adata: ad.AnnData,
        key: str,
        hidden: int,
        params: dict,
        fingerprint: Callable[[], dict],
        *,
        genes: bool,
        distributed: bool,
        restart: bool = False,
    ) -> EmbeddingStore:
        """A store for ``adata``: resumable when ``adata`` is backed ``r+``.

        Parameters
        ----------
        fingerprint
            Returns what the run is computed from (:func:`scgf._resume.check_same`); called
            only for a backed file.
        restart
            Discard saved progress of another run instead of refusing it.
        """
        if not writable_file(adata) or distributed:
            return cls(adata, key, hidden, params, genes)
        progress = ProgressFolder(
            progress_folder(adata.filename, key),
            fingerprint(),
            "run again with the same cells, tokens, model and parameters to resume it, or "
            "pass restart=True (scgf embed --restart) to discard it.",
            restart=restart,
        )
        return cls(adata, key, hidden, params, genes, progress=progress)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Keep the embeddings of cells ``rows`` (indices into ``adata``)."""
        self.done[rows] = True
        if self.progress is None:
            self.values[rows] = values
            return
        self.pending_rows.append(np.asarray(rows, dtype=np.int64))
        self.pending_values.append(np.asarray(values, dtype=np.float32))

    def save(self, gene_state=None) -> None:
        """Save the cells added since the last save (and the running gene sums), so that an
        interrupted run resumes after them."""
        if gene_state is not None:
            self.gene_sums, self.gene_counts = gene_state
        if self.progress is None or not self.pending_rows:
            return
        part = {
            "rows": np.concatenate(self.pending_rows),
            "values": np.concatenate(self.pending_values),
        }
        # The gene sums (vocabulary × hidden) are kept once, not once per part.
        state = None
        if gene_state is not None:
            state = {"gene_sums": gene_state[0], "gene_counts": gene_state[1]}
        self.progress.save(part, state)
        self.pending_rows.clear()
        self.pending_values.clear()

    def finish(self, gene_embeddings: np.ndarray | None) -> None:
        """Put the results under ``obsm``/``varm``/``uns`` (and into the file when backed)."""
        uns = {"params": self.params}
        if self.progress is None:
            self.adata.obsm[self.key] = sum_across(self.values)  # merges torchrun shards
            if gene_embeddings is not None:
                self.adata.varm[self.key] = gene_embeddings
            self.adata.uns[self.key] = uns
            return
        handle = self.adata.file._file
        obsm = handle.require_group("obsm")
        if self.key in obsm:
            del obsm[self.key]
        dataset = obsm.create_dataset(
            self.key,
            shape=(self.adata.n_obs, self.values_width),
            dtype="float32",
            fillvalue=np.nan,
        )
        for part in self.progress.parts():  # one part in memory at a time
            order = np.argsort(part["rows"])  # h5py writes rows in increasing order
            dataset[part["rows"][order]] = part["values"][order]
        dataset.attrs.update(_ARRAY_ATTRS)
        for group_name, value in (("uns", uns), ("varm", gene_embeddings)):
            if value is None:
                continue
            group = handle.require_group(group_name)
            if self.key in group:
                del group[self.key]
            ad.io.write_elem(group, self.key, value)
        handle.flush()
        self.progress.remove()  # only once the results are in the file
        self.adata.obsm[self.key] = dataset
        self.adata.uns[self.key] = uns
        if gene_embeddings is not None:
            self.adata.varm[self.key] = gene_embeddings
