"""Token manipulation for in silico perturbation (pure numpy, gene tokens only).

Every function takes a cell's gene tokens in rank order (no ``<cls>``/``<eos>``) and returns
``(perturbed, original)``: the perturbed gene sequence and the original sequence it is compared
with (the same as the input except when overexpression pushes genes past the context, see
:func:`overexpress`).
"""

from __future__ import annotations

import numpy as np

PERTURB_TYPES = ("delete", "overexpress", "inhibit", "activate")


def delete(genes: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the target genes from the ranking."""
    return genes[~np.isin(genes, targets)], genes


def overexpress(
    genes: np.ndarray, targets: np.ndarray, max_genes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move the targets to the top, in the order given; absent targets are inserted there.

    When inserted genes push the sequence past ``max_genes``, both the perturbed and the
    original sequence lose that many genes from the bottom, so that both describe the same
    genes (the reference's ``n_overflow``).
    """
    perturbed = np.concatenate([targets, genes[~np.isin(genes, targets)]])
    overflow = len(perturbed) - max_genes
    if overflow > 0:
        return perturbed[:max_genes], genes[: len(genes) - overflow]
    return perturbed, genes


def shift(genes: np.ndarray, targets: np.ndarray, fraction: float, toward: str):
    """Move each target a ``fraction`` of the way to the bottom (``"end"``) or top (``"front"``).

    A gene at rank position ``p`` of ``n`` moves to ``p + round(fraction * (n - 1 - p))``
    (inhibit) or ``p - round(fraction * p)`` (activate), halves rounded up; the genes between
    move up or down by one. Several targets move one after another in the order given.
    """
    perturbed = genes.copy()
    last = len(genes) - 1
    for target in targets:
        where = np.flatnonzero(perturbed == target)
        if len(where) == 0:
            continue
        pos = int(where[0])
        distance = (last - pos) if toward == "end" else pos
        step = int(np.floor(fraction * distance + 0.5))
        new = pos + step if toward == "end" else pos - step
        perturbed = np.insert(np.delete(perturbed, pos), new, target)
    return perturbed, genes


def perturb(
    genes: np.ndarray,
    targets: np.ndarray,
    perturb_type: str,
    *,
    max_genes: int,
    fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``perturb_type`` to ``targets`` in one cell's gene ranking."""
    if perturb_type == "delete":
        return delete(genes, targets)
    if perturb_type == "overexpress":
        return overexpress(genes, targets, max_genes)
    if perturb_type in ("inhibit", "activate"):
        return shift(genes, targets, fraction, "end" if perturb_type == "inhibit" else "front")
    raise ValueError(f"perturb_type={perturb_type!r}; use one of {PERTURB_TYPES}.")


def changes_anything(genes: np.ndarray, target: int, perturb_type: str) -> bool:
    """Whether perturbing one expressed gene changes the ranking (the top gene cannot be
    overexpressed or activated further, the bottom one not inhibited)."""
    pos = int(np.flatnonzero(genes == target)[0])
    if perturb_type in ("overexpress", "activate"):
        return pos > 0
    if perturb_type == "inhibit":
        return pos < len(genes) - 1
    return True
