"""What to perturb: gene groups, cell selection and the per-cell list of perturbations."""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from ... import _logging
from ...vocab import Vocabulary

ALL = "all"


@dataclass
class Plan:
    """The perturbations to run.

    ``groups`` maps a perturbation id to its target tokens: in ``"all"`` mode the id is the
    gene's token (or, with ``combos``, the partner's token) and targets are found per cell.
    """

    mode: str  # "all" or "groups"
    groups: dict[int, np.ndarray] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    anchor: int | None = None
    combos: bool = False

    def for_cell(
        self, genes: np.ndarray, perturb_type: str, changes
    ) -> list[tuple[int, np.ndarray]]:
        """``(perturbation id, targets)`` for one cell's gene tokens."""
        present = set(genes.tolist())
        if self.mode == ALL:
            if self.anchor is not None and self.anchor not in present:
                return []
            out = []
            for tok in genes:
                tok = int(tok)
                if self.combos:
                    if tok == self.anchor:
                        continue
                    out.append((tok, np.array(sorted((self.anchor, tok)), dtype=genes.dtype)))
                elif changes(genes, tok, perturb_type):
                    out.append((tok, np.array([tok], dtype=genes.dtype)))
            return out
        out = []
        for pid, targets in self.groups.items():
            if perturb_type != "overexpress" and not present.issuperset(targets.tolist()):
                continue
            out.append((pid, targets.astype(genes.dtype)))
        return out


def make_plan(genes, vocab: Vocabulary, anchor_gene: str | None, combos: bool) -> Plan:
    """Parse ``genes=``: ``"all"``, one list (one group), or ``{name: list}`` (several)."""
    anchor = None
    if anchor_gene is not None:
        anchor = int(_tokens_of([anchor_gene], vocab, "anchor_gene")[0])
    if combos and anchor is None:
        raise ValueError("combos=True perturbs an anchor with every other gene: pass anchor_gene=.")
    if isinstance(genes, str) and genes == ALL:
        return Plan(ALL, anchor=anchor, combos=combos)
    if combos:
        raise ValueError("combos=True works with genes='all' (anchor + each other gene).")
    if isinstance(genes, str):
        genes = [genes]
    named = dict(genes) if isinstance(genes, dict) else {"+".join(map(str, genes)): list(genes)}
    plan = Plan("groups")
    for i, (name, members) in enumerate(named.items()):
        plan.groups[i] = _tokens_of(list(members), vocab, f"genes[{name!r}]")
        plan.names[i] = str(name)
    return plan


def _tokens_of(ids: list, vocab: Vocabulary, what: str) -> np.ndarray:
    tokens = vocab.map_genes(np.asarray(ids, dtype=object))
    missing = [g for g, t in zip(ids, tokens, strict=True) if t < 0]
    if len(missing) == len(ids):
        raise ValueError(
            f"None of {what} ({ids[:5]}) is in the {vocab.name} vocabulary; use human gene "
            "symbols or Ensembl IDs."
        )
    if missing:
        _logging.warn(f"{what}: {missing} not in the {vocab.name} vocabulary, left out.")
    return np.array(list(dict.fromkeys(int(t) for t in tokens if t >= 0)), dtype=np.int64)


def select_cells(
    adata: ad.AnnData,
    lengths: np.ndarray,
    mask_obs,
    cell_states: dict | None,
    max_cells: int | None,
    random_state: int,
) -> np.ndarray:
    """Indices of the cells to perturb: with tokens, in ``mask``, in the start state, then
    at most ``max_cells`` of them drawn at random (kept in input order)."""
    keep = lengths > 0
    if mask_obs is not None:
        values = (
            adata.obs[mask_obs].to_numpy() if isinstance(mask_obs, str) else np.asarray(mask_obs)
        )
        if values.dtype != bool or values.shape != (adata.n_obs,):
            raise ValueError(
                f"mask_obs must be a boolean mask (or obs column) of length n_obs={adata.n_obs}."
            )
        keep &= values
    if cell_states is not None:
        keep &= (adata.obs[cell_states["key"]] == cell_states["start"]).to_numpy()
    cells = np.flatnonzero(keep)
    if max_cells is not None and len(cells) > max_cells:
        rng = np.random.default_rng(random_state)
        cells = np.sort(rng.choice(cells, max_cells, replace=False))
    return cells


def check_states(adata: ad.AnnData, cell_states: dict | None) -> list:
    """Validate ``cell_states`` and return the state values in score order
    (goal, alternatives…, start)."""
    if cell_states is None:
        return []
    unknown = set(cell_states) - {"key", "start", "goal", "alt"}
    if unknown or not {"key", "start", "goal"} <= set(cell_states):
        raise ValueError(
            "cell_states needs {'key': obs column, 'start': value, 'goal': value, "
            f"'alt': [values]}} (alt optional); got keys {sorted(cell_states)}."
        )
    key = cell_states["key"]
    if key not in adata.obs:
        raise KeyError(f"cell_states['key']={key!r} is not an obs column.")
    states = [cell_states["goal"], *cell_states.get("alt", []), cell_states["start"]]
    if len(set(states)) != len(states):
        raise ValueError(f"cell states must be distinct; got {states}.")
    present = set(pd.unique(adata.obs[key]))
    missing = [s for s in states if s not in present]
    if missing:
        raise ValueError(f"No cells with obs[{key!r}] in {missing}; values are {sorted(present)}.")
    return states


def canonical_states(cell_states: dict | None) -> dict | None:
    """``cell_states`` in one form (``alt`` always present, a list), so that equal requests
    from the API and the command line record equal parameters."""
    if cell_states is None:
        return None
    return {
        "key": cell_states["key"],
        "start": cell_states["start"],
        "goal": cell_states["goal"],
        "alt": list(cell_states.get("alt") or []),
    }
