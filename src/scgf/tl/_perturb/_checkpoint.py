"""Saving in silico perturbation progress to disk, so an interrupted run can resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._resume import ProgressFolder

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
    """Finished blocks of cells, in memory and, with a folder, saved there to resume.

    The folder is a :class:`scgf._resume.ProgressFolder`: parts written atomically, with the
    run's fingerprint (cells, their tokens, the model and the parameters); a folder written
    for anything else is refused, naming what differs, rather than mixed.
    """

    def __init__(self, folder: str | Path | None, fingerprint: dict | None):
        self.progress = None
        self.parts: list[dict[str, np.ndarray]] = []
        if folder is None:
            return
        self.progress = ProgressFolder(
            folder,
            fingerprint,
            "pass another resume= folder (scgf perturb --resume) or delete this one.",
        )
        self.parts = list(self.progress.parts())

    @property
    def done_cells(self) -> set[int]:
        """Cells whose perturbations are all saved."""
        return {int(c) for part in self.parts for c in part["done"]}

    def save(self, part: dict[str, np.ndarray]) -> None:
        """Keep a finished block (and write it to the folder, if any)."""
        self.parts.append(part)
        if self.progress is not None:
            self.progress.save(part)

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
