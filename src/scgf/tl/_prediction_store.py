"""Where predictions go: memory, or a backed file, with progress saved beside it to resume.

Saving and resuming are the embedding store's (:class:`~scgf.tl._embedding_store.EmbeddingStore`):
the probabilities of all tasks, side by side, are the stored values of each cell. Only what is
written at the end differs: a categorical column and a probability matrix per task.
"""

from __future__ import annotations

from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd

from .._anndata import writable_file
from .._engine._distributed import sum_across
from .._resume import ProgressFolder
from ._embedding_store import _ARRAY_ATTRS, EmbeddingStore, progress_folder
from ._predict import task_keys

REMEDY = (
    "run again with the same cells, tokens, model and parameters to resume it, or pass "
    "restart=True (scgf predict --restart) to discard it."
)


def predicted_codes(proba: np.ndarray) -> np.ndarray:
    """The argmax class id of each row, ``-1`` where the row is NaN (a cell without tokens)."""
    empty = np.isnan(proba).any(axis=1)
    return np.where(empty, -1, np.nan_to_num(proba, nan=-1.0).argmax(axis=1))


class PredictionStore(EmbeddingStore):
    """Collects each cell's class probabilities batch by batch and writes them at the end.

    On an AnnData backed by a writable file (single process) progress goes to a
    :class:`scgf._resume.ProgressFolder` beside the file, so that an interrupted run resumes
    from its last save; the results go into the file only when the run completes.
    """

    def __init__(self, adata, key, tasks: dict[str, list[str]], params, progress=None):
        self.tasks = tasks
        width = sum(len(classes) for classes in tasks.values())
        super().__init__(adata, key, width, params, genes=False, progress=progress)

    @classmethod
    def open(
        cls,
        adata: ad.AnnData,
        key: str,
        tasks: dict[str, list[str]],
        params: dict,
        fingerprint: Callable[[], dict],
        *,
        distributed: bool,
        restart: bool = False,
    ) -> PredictionStore:
        """A store for ``adata``: resumable when ``adata`` is backed ``r+`` (one process)."""
        if not writable_file(adata) or distributed:
            return cls(adata, key, tasks, params)
        folder = ProgressFolder(
            progress_folder(adata.filename, key), fingerprint(), REMEDY, restart=restart
        )
        return cls(adata, key, tasks, params, progress=folder)

    def _split(self, values: np.ndarray) -> list[np.ndarray]:
        """``values`` (cells × all classes) as one (cells × classes) block per task."""
        bounds = np.cumsum([len(c) for c in self.tasks.values()])[:-1]
        return [np.ascontiguousarray(b) for b in np.split(values, bounds, axis=1)]

    def finish(self) -> int:
        """Put the predictions under ``obs``/``obsm``/``uns`` (and into the file when
        backed); returns the number of cells without a prediction (no tokens)."""
        keys = task_keys(self.key, self.tasks)
        uns = {"classes": {t: list(c) for t, c in self.tasks.items()}, "params": self.params}
        if self.progress is None:
            blocks = self._split(sum_across(self.values))  # merges torchrun shards
            codes = [predicted_codes(block) for block in blocks]
            self._set(keys, codes, blocks, uns)
            return int((codes[0] < 0).sum())
        handle = self.adata.file._file
        obsm = handle.require_group("obsm")
        datasets = []
        for (_, proba_key), classes in zip(keys.values(), self.tasks.values(), strict=True):
            if proba_key in obsm:
                del obsm[proba_key]
            datasets.append(
                obsm.create_dataset(
                    proba_key,
                    shape=(self.adata.n_obs, len(classes)),
                    dtype="float32",
                    fillvalue=np.nan,
                )
            )
        codes = [np.full(self.adata.n_obs, -1, dtype=np.int64) for _ in self.tasks]
        for part in self.progress.parts():  # one part in memory at a time
            order = np.argsort(part["rows"])  # h5py writes rows in increasing order
            rows = part["rows"][order]
            for dataset, task_codes, block in zip(
                datasets, codes, self._split(part["values"][order]), strict=True
            ):
                dataset[rows] = block
                task_codes[rows] = predicted_codes(block)
        for dataset in datasets:
            dataset.attrs.update(_ARRAY_ATTRS)
        self._set(keys, codes, datasets, uns)
        group = handle.require_group("uns")
        if self.key in group:
            del group[self.key]
        ad.io.write_elem(group, self.key, uns)
        del handle["obs"]
        ad.io.write_elem(handle, "obs", self.adata.obs)
        handle.flush()
        self.progress.remove()  # only once the results are in the file
        return int((codes[0] < 0).sum())

    def _set(self, keys, codes, probabilities, uns) -> None:
        for (column, proba_key), task_codes, proba, classes in zip(
            keys.values(), codes, probabilities, self.tasks.values(), strict=True
        ):
            self.adata.obs[column] = pd.Categorical.from_codes(task_codes, categories=classes)
            self.adata.obsm[proba_key] = proba
        self.adata.uns[self.key] = uns
