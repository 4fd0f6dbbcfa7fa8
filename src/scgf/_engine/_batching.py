"""Length-sorted batches filled up to a token budget."""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Group cells into batches, longest first, so that ``batch size × longest ≤ budget``.

    Sorting by length means each batch pads only to its own longest cell, which is close to
    every other cell in it. Cells of length 0 are left out.

    Parameters
    ----------
    lengths
        Tokens per cell.
    token_budget
        Most padded tokens per batch; a cell longer than the budget gets a batch of its own.

    Returns
    -------
    Arrays of cell indices, one per batch.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    batches = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, token_budget // longest)
        batches.append(order[start : start + size])
        start += size
    return batches
