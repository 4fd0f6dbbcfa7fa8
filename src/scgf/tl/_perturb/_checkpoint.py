"""Saving in silico perturbation progress to disk, so an interrupted run can resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A checkpoint is written after at most 8 cells or 2,048 tokens of cells (about as many
# perturbed copies with genes="all"), so that long cells are saved one by one.
BLOCK_CELLS, BLOCK_TOKENS = 8, 2048

# The arrays of a block: one entry per (cell, perturbation), and per affected gene.
RECORD_KEYS = (
    "cell",
    "perturbation",
    "scores",
    "gene_pert",
    "gene_token",
    "gene_cosine",
)


class Checkpoint:
    """A folder of finished blocks of cells (``part-*.npz``) and the run's parameters.

    A folder written with other parameters is refused rather than mixed.
    """

    def __init__(self, folder: str | Path | None, params: dict):
        self.folder = None if folder is None else Path(folder)
        self.parts: list[dict[str, np.ndarray]] = []
        if self.folder is None:
            return
        signature = json.dumps(params, sort_keys=True, default=str)
        params_file = self.folder / "params.json"
        if params_file.exists():
            if params_file.read_text() != signature:
                raise ValueError(
                    f"The checkpoint in {self.folder} belongs to a run with other parameters; "
                    "pass another resume= folder or delete this one."
                )
            for path in sorted(self.folder.glob("part-*.npz")):
                with np.load(path) as data:
                    self.parts.append({k: data[k] for k in data.files})
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            params_file.write_text(signature)

    @property
    def done_cells(self) -> set[int]:
        """Cells whose perturbations are all saved."""
        return {int(c) for part in self.parts for c in part["done"]}

    def save(self, part: dict[str, np.ndarray]) -> None:
        """Keep a finished block (and write it to the folder, if any)."""
        self.parts.append(part)
        if self.folder is not None:
            index = len(list(self.folder.glob("part-*.npz")))
            tmp = self.folder / f".part-{index:06d}.npz"
            np.savez(tmp, **part)
            tmp.rename(self.folder / f"part-{index:06d}.npz")

    def merged(self) -> dict[str, np.ndarray]:
        """All blocks' arrays concatenated."""
        if not self.parts:
            return {}
        return {k: np.concatenate([p[k] for p in self.parts]) for k in (*RECORD_KEYS, "done")}


def checkpoint_blocks(cells: list[int], lengths: np.ndarray) -> list[list[int]]:
    """Consecutive blocks of ``cells``, each closed at ``BLOCK_CELLS`` cells or once its cells'
    token counts reach ``BLOCK_TOKENS``."""
    blocks, block, tokens = [], [], 0
    for cell in cells:
        block.append(cell)
        tokens += int(lengths[cell])
        if len(block) == BLOCK_CELLS or tokens >= BLOCK_TOKENS:
            blocks.append(block)
            block, tokens = [], 0
    return [*blocks, block] if block else blocks
