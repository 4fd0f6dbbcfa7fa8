"""``scgf.tl.perturb``: the AnnData shell of in silico perturbation.

It checks the arguments, loads the model, selects cells, and hands blocks of cells to
:class:`~._cells.CellPerturber`; the results go into AnnData through :mod:`._results`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
from tqdm.auto import tqdm

from ... import _keys, _logging
from ..._anndata import as_csr, rna_modality
from ..._settings import settings
from ...models import DEFAULT_MODEL
from .._common import check_pooling, ensure_tokens
from ._checkpoint import Checkpoint, checkpoint_blocks
from ._plan import ALL, canonical_states, check_states, make_plan, select_cells
from ._tokens import PERTURB_TYPES

if TYPE_CHECKING:
    import torch


def perturb(
    adata: ad.AnnData,
    genes: str | list[str] | dict[str, list[str]] = "all",
    *,
    perturb_type: Literal["delete", "overexpress", "inhibit", "activate"] = "delete",
    model=DEFAULT_MODEL,
    cell_states: dict | None = None,
    anchor_gene: str | None = None,
    combos: bool = False,
    pooling: Literal["cls", "mean"] | None = None,
    emb_layer: int = -1,
    gene_shifts: bool = False,
    mask_obs: np.ndarray | str | None = None,
    max_cells: int | None = None,
    rank_shift: float = 0.5,
    resume: str | None = None,
    key_added: str = _keys.PERTURB,
    random_state: int = 0,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_tokens: int | None = None,
    tokens_key: str = _keys.TOKENS,
    copy: bool = False,
) -> ad.AnnData | None:
    """Perturb genes in silico and measure how far each cell's embedding moves.

    Each selected cell is embedded as it is and once per perturbation with its rank-value
    encoding changed:

    - ``"delete"``: the gene(s) are removed from the ranking;
    - ``"overexpress"``: moved to the top (right after ``<cls>`` on V2), in the order given;
      genes the cell does not express are inserted there, and if that pushes genes past the
      context, the same number of bottom genes is dropped from the original too;
    - ``"inhibit"``: each gene at rank position ``p`` of ``n`` moves to
      ``p + round(rank_shift * (n - 1 - p))``, i.e. ``rank_shift`` of the way to the bottom;
    - ``"activate"``: to ``p - round(rank_shift * p)``, ``rank_shift`` of the way to the top.
      (Geneformer documents these two but never implemented them.)

    Scores, with Geneformer's definitions (spec §5.3): without ``cell_states``, the cosine
    similarity between the perturbed and original embedding (``pooling="cls"``), or the mean
    over the genes left in both of the cosine between each gene's perturbed and original
    embedding (``pooling="mean"``). With ``cell_states``, the shift toward each state S,
    ``cos(perturbed, E_S) - cos(original, E_S)``, where ``E_S`` is the mean embedding of the
    cells in state S in ``adata``; only start-state cells are perturbed.

    Parameters
    ----------
    adata
        Tokenized AnnData (tokenized on the fly with the model's vocabulary if needed).
    genes
        ``"all"`` (each expressed gene of each cell in turn), a list of symbols or Ensembl IDs
        perturbed together as one group, or ``{name: [genes]}`` for several groups.
    perturb_type
        ``"delete"``, ``"overexpress"``, ``"inhibit"`` or ``"activate"``.
    model
        Registry name, local folder or loaded transformers model.
    cell_states
        ``{"key": obs column, "start": value, "goal": value, "alt": [values]}``.
    anchor_gene
        With ``genes="all"``: perturb only cells expressing it; with ``combos=True`` perturb it
        together with every other gene of the cell.
    combos
        Pair the anchor with each other gene.
    pooling, emb_layer
        As in :func:`scgf.tl.embed` (V2: ``"cls"``, V1: ``"mean"``; layer -1).
    gene_shifts
        Also record, for every perturbation and every other gene, the mean cosine between
        that gene's perturbed and original embedding (``uns[key_added]["gene_shifts"]``).
    mask_obs
        Boolean mask or obs column of cells that may be perturbed.
    max_cells
        Perturb at most this many cells, drawn with ``random_state``.
    rank_shift
        Fraction of the way a gene moves for ``inhibit``/``activate``.
    resume
        A folder where finished cells are saved as the run goes; calling again with the same
        folder and parameters skips them (the result equals an uninterrupted run).
    key_added
        Results go to ``adata.uns[key_added]`` (``params``, ``results``, ``gene_shifts``);
        per-cell scores of ``genes="all"`` to ``adata.layers[key_added]`` (sparse cells ×
        genes), of gene groups to ``adata.obsm[key_added]`` (cells × groups, NaN where not
        perturbed). The stored per-cell score is the first score column (the goal-state
        shift, or the cosine to the original).
    random_state
        Seed for ``max_cells`` and the null distribution's downsampling.
    dtype
        Compute precision. Default float32 on every device, the reference's precision: scores
        are differences of cosines near 1, and bf16 rounding (~4e-3 relative) is as large as
        small effects (``benchmarks/perturb_speed.py``: bf16 keeps the effects' rank
        correlation at 0.99 but only 11 of the exact top 20 genes). ``"bfloat16"`` ran 1.85×
        as fast on a CPU with AVX-512 BF16 (GPUs gain more, not measured here); confirm its
        top hits in float32.
    device, batch_tokens, tokens_key
        As in :func:`scgf.tl.embed`.
    copy
        Return a copy with the results instead of modifying ``adata``.

    Returns
    -------
    ``None`` or the copy. ``scgf.get.perturb_df(adata)`` gives the results table: one row per
    perturbation and state with ``n_cells``, ``mean_shift``, ``median_shift`` and, with states
    and one gene per perturbation, the rank-sum ``pvalue`` against all perturbations and its
    Benjamini–Hochberg ``fdr``.
    """
    from ..._engine import LayerOutput, Runner, load_model, resolve_device
    from ..._engine._distributed import gather_records, shard, world
    from ..._resume import cells_fingerprint, tokens_fingerprint
    from ._cells import CellPerturber, state_embeddings
    from ._results import store_results

    if perturb_type not in PERTURB_TYPES:
        raise ValueError(f"perturb_type={perturb_type!r}; use one of {PERTURB_TYPES}.")
    if not 0 < rank_shift <= 1:
        raise ValueError(f"rank_shift={rank_shift} must be in (0, 1].")
    data = adata.copy() if copy else adata
    target = rna_modality(data)
    states = check_states(target, cell_states)
    rank, size = world()
    torch_device = resolve_device(device)
    compute_dtype = perturbation_dtype(dtype, torch_device)
    loaded = load_model(model, device=torch_device)
    vocab = loaded.vocab
    pooling = check_pooling(pooling, vocab.special_tokens)
    plan = make_plan(genes, vocab, anchor_gene, combos)
    ensure_tokens(target, vocab, tokens_key)
    tokens = as_csr(target.obsm[tokens_key][:])
    readout = LayerOutput(loaded, emb_layer, cls_only=pooling == "cls" and not gene_shifts)
    runner = Runner(loaded, readout, dtype=compute_dtype, token_budget=batch_tokens)
    cells = select_cells(
        target, np.diff(tokens.indptr), mask_obs, cell_states, max_cells, random_state
    )
    params = {
        **loaded.describe(),
        "genes": genes if isinstance(genes, str | list) else dict(genes),
        "perturb_type": perturb_type,
        "cell_states": canonical_states(cell_states),
        "anchor_gene": anchor_gene,
        "combos": combos,
        "pooling": pooling,
        "emb_layer": emb_layer,
        "gene_shifts": gene_shifts,
        "max_cells": max_cells,
        "rank_shift": rank_shift,
        "random_state": random_state,
        "dtype": str(compute_dtype).removeprefix("torch."),
    }
    start_time = _logging.info(
        f"perturbing ({perturb_type}) {len(cells)} cells with {loaded.name} "
        f"(emb_layer={emb_layer}, {pooling} pooling)"
    )
    state_embs = None
    if states:
        labels = target.obs[cell_states["key"]].to_numpy()
        state_embs = state_embeddings(labels, tokens, runner, pooling, vocab.special_tokens, states)
    engine = CellPerturber(
        runner, plan, perturb_type, pooling, vocab, state_embs, gene_shifts, rank_shift
    )
    if resume is not None and size > 1:  # one folder per process of a torchrun job
        resume = f"{resume}/rank{rank}-of-{size}"
    fingerprint = None
    if resume is not None:
        fingerprint = {
            "cells": cells_fingerprint(target.obs_names[cells]),
            "tokens": tokens_fingerprint(tokens[cells]),
            **params,
        }
    checkpoint = Checkpoint(resume, fingerprint)
    start, stop = shard(len(cells), rank, size)
    done = checkpoint.done_cells
    todo = [int(c) for c in cells[start:stop] if int(c) not in done]
    with tqdm(
        total=stop - start,
        initial=stop - start - len(todo),
        unit="cells",
        desc=f"perturb ({perturb_type})",
        disable=not settings.progress or rank > 0,
    ) as bar:
        for block in checkpoint_blocks(todo, np.diff(tokens.indptr)):
            checkpoint.save(engine.run_cells(tokens, block, on_cell=bar.update))
    records = gather_records(checkpoint.merged())
    store_results(
        target,
        key_added,
        records,
        plan,
        vocab,
        states,
        params,
        tokens_key,
        test=bool(states) and plan.mode == ALL,
        random_state=random_state,
    )
    _logging.info(f"    finished: added uns[{key_added!r}]", time=start_time)
    return data if copy else None


def perturbation_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute precision of a perturbation run: ``dtype``, else float32 on any device."""
    import torch

    from ..._engine import resolve_dtype

    return torch.float32 if dtype is None else resolve_dtype(dtype, device)
