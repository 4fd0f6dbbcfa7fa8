"""Training datasets over scgf token matrices (in memory, backed, or many backed files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._anndata import as_csr, row_lengths

IGNORE_INDEX = -100  # transformers' loss ignores this label


class TokenDataset(torch.utils.data.Dataset):
    """Cells of one or more token matrices as training examples.

    Each item is ``{"input_ids": LongTensor}`` plus, when labels are given, ``"labels"``: a
    cell's class (``cell_labels``) or, per position, the class of the token there and
    ``-100`` elsewhere (``token_labels``). Cells without tokens are left out; ``lengths`` holds
    every example's token count for length-grouped sampling.

    Parameters
    ----------
    tokens
        One token matrix (CSR, or an AnnData backed sparse dataset) or a list of them, as
        written by :func:`scgf.pp.tokenize` (row i = cell i's tokens at columns 0..len-1).
    cell_labels
        Integer class of every cell (all matrices' cells in order); negative = unlabelled,
        left out.
    token_labels
        Array indexed by token id giving the class of that gene (negative: no label), for
        token classification. Cells without any labelled token are left out.
    """

    def __init__(
        self,
        tokens,
        *,
        cell_labels: np.ndarray | None = None,
        token_labels: np.ndarray | None = None,
    ):
        if cell_labels is not None and token_labels is not None:
            raise ValueError("Pass cell_labels or token_labels, not both.")
        self.matrices = list(tokens) if isinstance(tokens, list | tuple) else [tokens]
        lengths = [row_lengths(m) for m in self.matrices]
        sizes = [len(x) for x in lengths]
        self.matrix_of = np.repeat(np.arange(len(sizes)), sizes)
        self.row_of = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, int)
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, int)
        keep = all_lengths > 0
        self.cell_labels = None
        if cell_labels is not None:
            cell_labels = np.asarray(cell_labels)
            if len(cell_labels) != len(all_lengths):
                raise ValueError(
                    f"cell_labels has {len(cell_labels)} entries for {len(all_lengths)} cells."
                )
            keep &= cell_labels >= 0
            self.cell_labels = cell_labels.astype(np.int64)
        self.token_labels = None
        if token_labels is not None:
            self.token_labels = np.asarray(token_labels, dtype=np.int64)
            keep &= self._has_labelled_token()
        self.index = np.flatnonzero(keep)
        self.lengths = all_lengths[self.index]

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], key: str = "gf_tokens", **labels):
        """A dataset over the tokens of several ``.h5ad`` files, each opened backed (``"r"``)
        so only the rows of each batch are read."""
        import anndata as ad

        matrices = []
        for path in paths:
            backed = ad.read_h5ad(path, backed="r")
            if key not in backed.obsm:
                raise KeyError(f"{path} has no obsm[{key!r}] tokens; run scgf tokenize first.")
            matrices.append(backed.obsm[key])
        return cls(matrices, **labels)

    def _row(self, i: int) -> np.ndarray:
        matrix = self.matrices[self.matrix_of[i]]
        row = as_csr(matrix[int(self.row_of[i]) : int(self.row_of[i]) + 1])
        return row.data[np.argsort(row.indices, kind="stable")].astype(np.int64)

    def _has_labelled_token(self) -> np.ndarray:
        out = np.zeros(len(self.matrix_of), dtype=bool)
        labelled = self.token_labels >= 0
        start = 0
        for matrix in self.matrices:
            n = matrix.shape[0]
            for lo in range(0, n, 8192):
                block = as_csr(matrix[lo : min(lo + 8192, n)])
                hit = labelled[np.minimum(block.data, len(labelled) - 1)] & (
                    block.data < len(labelled)
                )
                rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
                out[start + lo + np.unique(rows[hit])] = True
            start += n
        return out

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i = int(self.index[item])
        ids = self._row(i)
        example = {"input_ids": torch.from_numpy(ids)}
        if self.cell_labels is not None:
            example["labels"] = torch.tensor(self.cell_labels[i])
        elif self.token_labels is not None:
            inside = ids < len(self.token_labels)
            labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
            labels[inside] = self.token_labels[ids[inside]]
            labels[labels < 0] = IGNORE_INDEX
            example["labels"] = torch.from_numpy(labels)
        return example
