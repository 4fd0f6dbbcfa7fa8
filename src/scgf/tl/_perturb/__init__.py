"""``scgf.tl.perturb``: in silico deletion, overexpression, inhibition and activation.

- :mod:`._api`: the AnnData shell (arguments, model, cell selection, progress, resume);
- :mod:`._plan`: what to perturb (gene groups, anchor/combos, cells, states);
- :mod:`._tokens`: the token edits of each perturbation type (numpy, no model);
- :mod:`._cells`: one cell's original and perturbed copies through the shared runner;
- :mod:`._scores`: cosine shifts (torch kernels);
- :mod:`._stats`: per-perturbation summaries and the goal-state rank-sum test;
- :mod:`._checkpoint`: finished blocks saved to disk for resuming;
- :mod:`._results`: the tables and per-cell scores written into AnnData.
"""

from ._api import perturb, perturbation_dtype
from ._checkpoint import checkpoint_blocks

__all__ = ["checkpoint_blocks", "perturb", "perturbation_dtype"]
