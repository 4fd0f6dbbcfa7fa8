"""Statistics of in silico perturbation: per-perturbation summaries and the goal-state test."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

NULL_SIZE = 100_000


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN stays NaN)."""
    pvalues = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(pvalues, np.nan)
    finite = ~np.isnan(pvalues)
    if finite.any():
        out[finite] = stats.false_discovery_control(pvalues[finite], method="bh")
    return out


def summarize(
    perturbation: np.ndarray,
    scores: np.ndarray,
    states: list[str],
    *,
    test: bool,
    random_state: int = 0,
) -> pd.DataFrame:
    """One row per (perturbation, state): cells, mean and median score, and the test.

    With ``test`` (states given, one perturbation per gene), each perturbation's shifts
    toward a state are compared with the pooled shifts of all perturbations (downsampled to
    100,000) by a two-sided Wilcoxon rank-sum test, and p-values are adjusted per state with
    Benjamini–Hochberg, as in the reference's goal-state analysis.

    Parameters
    ----------
    perturbation
        The perturbation id of each record (cell × perturbation).
    scores
        Records × states.
    states
        Names of the score columns.
    test
        Whether to run the rank-sum test.
    random_state
        Seed of the null's downsampling.

    Returns
    -------
    Columns ``perturbation``, ``state``, ``n_cells``, ``mean_shift``, ``median_shift``,
    ``pvalue``, ``fdr``.
    """
    rng = np.random.default_rng(random_state)
    order = np.argsort(perturbation, kind="stable")
    ids, starts = np.unique(perturbation[order], return_index=True)
    groups = np.split(order, starts[1:])
    frames = []
    for k, state in enumerate(states):
        column = scores[:, k]
        null = column[~np.isnan(column)]
        if len(null) > NULL_SIZE:
            null = rng.choice(null, NULL_SIZE, replace=False)
        rows = []
        for pid, members in zip(ids, groups, strict=True):
            values = column[members]
            values = values[~np.isnan(values)]
            pvalue = np.nan
            if test and len(values) and len(null) > 1:
                pvalue = float(stats.ranksums(null, values).pvalue)
            rows.append(
                (
                    pid,
                    state,
                    len(values),
                    float(np.mean(values)) if len(values) else np.nan,
                    float(np.median(values)) if len(values) else np.nan,
                    pvalue,
                )
            )
        frame = pd.DataFrame(
            rows,
            columns=["perturbation", "state", "n_cells", "mean_shift", "median_shift", "pvalue"],
        )
        frame["fdr"] = benjamini_hochberg(frame["pvalue"].to_numpy())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
