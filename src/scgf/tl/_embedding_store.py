"""Where embeddings go: memory, or a backed file, with progress saved beside it to resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._anndata import writable_file
from .._engine._distributed import sum_across
from .._resume import ProgressFolder
from ._evaluate._provenance import row_signature

_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
# More groups than this is most likely a numeric column passed as groupby=.
MAX_GROUPS = 500


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

    def finish(
        self,
        gene_embeddings: np.ndarray | None,
        group_embeddings: dict[str, np.ndarray] | None = None,
        uns_extra: dict | None = None,
    ) -> None:
        """Put the results under ``obsm``/``varm``/``uns`` (and into the file when backed).

        ``group_embeddings`` are further ``varm`` entries (per-group gene embeddings, by their
        ``varm`` key) and ``uns_extra`` further entries of ``uns[key]``.
        """
        uns = {"params": self.params, **(uns_extra or {})}
        varm = {} if gene_embeddings is None else {self.key: gene_embeddings}
        varm.update(group_embeddings or {})
        if self.progress is None:
            self.adata.obsm[self.key] = sum_across(self.values)  # merges torchrun shards
            # tl.evaluate checks that the rows still belong to these cells
            uns["rows"] = row_signature(self.adata.obs_names, self.adata.obsm[self.key])
            for name, value in varm.items():
                self.adata.varm[name] = value
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
        uns["rows"] = row_signature(self.adata.obs_names, dataset)
        for group_name, name, value in [
            ("uns", self.key, uns),
            *(("varm", name, value) for name, value in varm.items()),
        ]:
            group = handle.require_group(group_name)
            if name in group:
                del group[name]
            ad.io.write_elem(group, name, value)
        handle.flush()
        self.progress.remove()  # only once the results are in the file
        self.adata.obsm[self.key] = dataset
        self.adata.uns[self.key] = uns
        for name, value in varm.items():
            self.adata.varm[name] = value


@dataclass
class CellGroups:
    """The groups of ``embed(groupby=)``: each cell's group code (``-1``: none), the group
    names, and the ``varm`` key of each group's gene embeddings."""

    key: str
    names: list[str]
    codes: np.ndarray
    varm_keys: list[str]

    def fingerprint(self) -> str:
        from .._resume import _digest

        labels = np.array("\n".join(self.names).encode())
        return f"{self.key}:{_digest(self.codes.astype(np.int64), labels)}"

    def table(self) -> pd.DataFrame:
        """One row per group: its name, ``varm`` key and number of cells."""
        n_cells = np.bincount(self.codes[self.codes >= 0], minlength=len(self.names))
        return pd.DataFrame(
            {"group": self.names, "varm_key": self.varm_keys, "n_cells": n_cells.astype(np.int64)}
        )


def cell_groups(adata: ad.AnnData, groupby: str, key: str) -> CellGroups:
    """The groups of ``adata.obs[groupby]`` (observed values, in category order)."""
    if groupby not in adata.obs.columns:
        columns = list(adata.obs.columns)
        raise KeyError(
            f"groupby={groupby!r} is not an obs column; the columns are {columns[:20]}"
            f"{' …' if len(columns) > 20 else ''}."
        )
    values = pd.Categorical(adata.obs[groupby]).remove_unused_categories()
    names = [str(c) for c in values.categories]
    if not names:
        raise ValueError(f"obs[{groupby!r}] has no values (all missing): no group to embed.")
    if len(names) > MAX_GROUPS:
        raise ValueError(
            f"groupby={groupby!r} has {len(names)} distinct values; per-group gene embeddings "
            f"are meant for a categorical column such as a cell type or condition (at most "
            f"{MAX_GROUPS} groups, each holding vocabulary × hidden sums)."
        )
    varm_keys = [f"{key}_{name.replace('/', '_')}" for name in names]
    if len(set(varm_keys)) < len(varm_keys):
        raise ValueError(
            f"obs[{groupby!r}] has group names that differ only by '/' and '_', which "
            "would share a varm key; rename them first."
        )
    return CellGroups(groupby, names, np.asarray(values.codes, dtype=np.int64), varm_keys)
