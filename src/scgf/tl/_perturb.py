"""``scgf.tl.perturb``: in silico deletion, overexpression, inhibition and activation."""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .._anndata import rna_modality
from .._engine import Runner, load_model, resolve_device, resolve_dtype
from .._engine._distributed import shard, world
from .._settings import settings
from ..models import DEFAULT_MODEL
from ..pp._tokenize import TOKENS_KEY
from ._common import as_csr, check_pooling, ensure_tokens, var_tokens
from ._perturb_checkpoint import RECORD_KEYS, Checkpoint
from ._perturb_plan import ALL, check_states, make_plan, select_cells
from ._perturb_scores import aligned_gene_cosines, alignment, cosine, state_shifts
from ._perturb_stats import summarize
from ._perturb_tokens import PERTURB_TYPES, changes_anything
from ._perturb_tokens import perturb as perturb_tokens
from ._pooling import pool

logger = logging.getLogger("scgf")

# A checkpoint is written after at most 8 cells or 2,048 tokens of cells (about as many
# perturbed copies with genes="all"), so that long cells are saved one by one.
BLOCK_CELLS, BLOCK_TOKENS = 8, 2048


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
    layer: int = -1,
    gene_shifts: bool = False,
    mask: np.ndarray | str | None = None,
    max_cells: int | None = None,
    rank_shift: float = 0.5,
    resume: str | None = None,
    key_added: str = "scgf_perturb",
    random_state: int = 0,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_tokens: int | None = None,
    tokens_key: str = TOKENS_KEY,
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
    pooling, layer
        As in :func:`scgf.tl.embed` (V2: ``"cls"``, V1: ``"mean"``; layer -1).
    gene_shifts
        Also record, for every perturbation and every other gene, the mean cosine between
        that gene's perturbed and original embedding (``uns[key_added]["gene_shifts"]``).
    mask
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
    runner = Runner(
        loaded,
        layer=layer,
        dtype=compute_dtype,
        token_budget=batch_tokens,
        first_token_only=pooling == "cls" and not gene_shifts,
    )
    cells = select_cells(target, np.diff(tokens.indptr), mask, cell_states, max_cells, random_state)
    params = {
        **loaded.describe(),
        "genes": genes if isinstance(genes, str | list) else dict(genes),
        "perturb_type": perturb_type,
        "cell_states": cell_states,
        "anchor_gene": anchor_gene,
        "combos": combos,
        "pooling": pooling,
        "layer": layer,
        "gene_shifts": gene_shifts,
        "max_cells": max_cells,
        "rank_shift": rank_shift,
        "random_state": random_state,
        "dtype": str(compute_dtype).removeprefix("torch."),
    }
    state_embs = None
    if states:
        state_embs = _state_embeddings(
            target, tokens, runner, pooling, vocab.special_tokens, cell_states["key"], states
        )
    engine = _CellPerturber(
        runner, plan, perturb_type, pooling, vocab, state_embs, gene_shifts, rank_shift
    )
    if resume is not None and size > 1:  # one folder per process of a torchrun job
        resume = f"{resume}/rank{rank}-of-{size}"
    checkpoint = Checkpoint(resume, params)
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
    records = _gather(checkpoint.merged(), size)
    _store(
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
    return data if copy else None


def perturbation_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute precision of a perturbation run: ``dtype``, else float32 on any device."""
    return torch.float32 if dtype is None else resolve_dtype(dtype, device)


class _CellPerturber:
    """Runs one cell's original and perturbed copies and scores them."""

    def __init__(
        self, runner, plan, perturb_type, pooling, vocab, state_embs, gene_shifts, rank_shift
    ):
        self.runner, self.plan, self.perturb_type = runner, plan, perturb_type
        self.pooling, self.vocab, self.gene_shifts = pooling, vocab, gene_shifts
        self.special = vocab.special_tokens
        self.states = state_embs
        self.rank_shift = rank_shift

    def _wrap(self, genes: np.ndarray) -> np.ndarray:
        if not self.special:
            return genes
        return np.concatenate([[self.vocab.cls_id], genes, [self.vocab.eos_id]])

    def _batches(self, sequences: list[np.ndarray]):
        """Yield ``(first index, hidden states, pooled embeddings)`` batch by batch, so that
        only one batch of hidden states is held at a time (a cell of n genes has n copies)."""
        width = max(len(s) for s in sequences)
        per_batch = max(1, self.runner.token_budget // width)
        for lo in range(0, len(sequences), per_batch):
            batch = sequences[lo : lo + per_batch]
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            for i, s in enumerate(batch):
                ids[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
            lengths = torch.tensor([len(s) for s in batch])
            hidden = self.runner.hidden_states(ids, lengths)
            # A copy, not a view: a <cls> view would keep the whole batch's hidden states alive.
            yield lo, hidden, pool(hidden, lengths, self.pooling, self.special).clone()

    def run_cells(
        self, tokens: sp.csr_matrix, cells: list[int], on_cell=None
    ) -> dict[str, np.ndarray]:
        """Perturb and score ``cells``; ``on_cell(1)`` is called after each (progress)."""
        out = {k: [] for k in RECORD_KEYS}
        for cell in cells:
            row = tokens[cell]
            seq = row.data[np.argsort(row.indices)].astype(np.int64)
            genes = seq[1:-1] if self.special else seq
            self._run_cell(cell, genes, out)
            if on_cell is not None:
                on_cell(1)
        result = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}
        n_scores = 1 if self.states is None else len(self.states)
        result["scores"] = result["scores"].reshape(-1, n_scores).astype(np.float32)
        result["done"] = np.array(cells, dtype=np.int64)
        return result

    def _run_cell(self, cell: int, genes: np.ndarray, out: dict) -> None:
        todo = self.plan.for_cell(genes, self.perturb_type, changes_anything)
        if not todo:
            return
        copies, originals, targets = [], [], []
        for _, tgt in todo:
            pert, orig = perturb_tokens(
                genes,
                tgt,
                self.perturb_type,
                max_genes=self.vocab.max_genes,
                fraction=self.rank_shift,
            )
            copies.append(pert)
            originals.append(orig)
            targets.append(tgt)
        # Originals differ from the cell only when overexpression overflowed the context.
        distinct = {len(o): o for o in originals}
        original_out = {n: next(self._batches([self._wrap(o)]))[1:] for n, o in distinct.items()}
        gene_cosines = _GeneCosines(
            len(copies), [p for p, _ in todo] if self.gene_shifts else None, int(self.special)
        )
        pooled_p = []
        for lo, hidden, pooled in self._batches([self._wrap(c) for c in copies]):
            pooled_p.append(pooled)
            if self._needs_genes:
                for length, (hidden_o, _) in original_out.items():
                    which = [j for j in range(lo, lo + len(hidden)) if len(originals[j]) == length]
                    if which:
                        gene_cosines.add(
                            which, hidden, lo, hidden_o[0], distinct[length], copies, targets
                        )
        pooled_p = torch.cat(pooled_p)
        pooled_o = torch.stack([original_out[len(o)][1][0] for o in originals])
        if self.states is not None:
            scores = state_shifts(pooled_p, pooled_o, self.states)
        elif self.pooling == "cls":
            scores = cosine(pooled_p, pooled_o)[:, None]
        else:
            scores = gene_cosines.mean()[:, None]
        gene_cosines.write(out)
        out["cell"].append(np.full(len(copies), cell))
        out["perturbation"].append(np.array([pid for pid, _ in todo]))
        out["scores"].append(scores.double().cpu().numpy().ravel())

    @property
    def _needs_genes(self) -> bool:
        return (self.pooling == "mean" and self.states is None) or self.gene_shifts


class _GeneCosines:
    """Per-gene cosines between perturbed copies and their original, gathered batch by batch:
    their mean per copy (V1's score) and, for ``gene_shifts``, every (perturbation, gene)."""

    def __init__(self, n_copies: int, perturbation_ids: list[int] | None, offset: int):
        self.offset = offset  # 1 where <cls> precedes the genes
        self.sum = torch.zeros(n_copies, dtype=torch.float64)
        self.count = torch.zeros(n_copies, dtype=torch.float64)
        self.perturbation_ids = None if perturbation_ids is None else np.asarray(perturbation_ids)
        self.records: dict[str, list] = {"gene_pert": [], "gene_token": [], "gene_cosine": []}

    def add(self, which, hidden, lo, hidden_original, original, copies, targets) -> None:
        """Score copies ``which`` (indices into all copies; ``hidden`` starts at copy ``lo``)."""
        pairs = alignment(
            original, [copies[j] for j in which], [targets[j] for j in which], self.offset
        )
        copy_idx = np.asarray(which)[pairs[0]]
        cos = (
            aligned_gene_cosines(hidden, hidden_original, (copy_idx - lo, pairs[1], pairs[2]))
            .double()
            .cpu()
        )
        self.sum.index_add_(0, torch.from_numpy(copy_idx), cos)
        self.count.index_add_(0, torch.from_numpy(copy_idx), torch.ones_like(cos))
        if self.perturbation_ids is not None:
            self.records["gene_pert"].append(self.perturbation_ids[copy_idx])
            self.records["gene_token"].append(pairs[3])
            self.records["gene_cosine"].append(cos.numpy())

    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    def write(self, out: dict) -> None:
        for key, parts in self.records.items():
            out[key].extend(parts)


def _state_embeddings(adata, tokens, runner, pooling, special, key, states) -> torch.Tensor:
    """Exact mean embedding of the cells of each state (same model, layer and pooling)."""
    means = []
    labels = adata.obs[key].to_numpy()
    for state in states:
        rows = np.flatnonzero((labels == state) & (np.diff(tokens.indptr) > 0))
        total = torch.zeros(runner.loaded.hidden_size, dtype=torch.float64)

        def on_batch(_rows, _ids, lengths, hidden, total=total):
            total += pool(hidden, lengths, pooling, special).double().sum(0).cpu()

        runner.run(tokens[rows], on_batch)
        means.append((total / len(rows)).float())
    return torch.stack(means).to(runner.device)


def _gather(records: dict, size: int) -> dict:
    if size == 1:
        return records
    import torch.distributed as dist

    everything = [None] * size
    dist.all_gather_object(everything, records)
    parts = [r for r in everything if r]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _gene_names(adata: ad.AnnData, vocab, tokens_key: str) -> dict[int, str]:
    """Display name of each token: the first variable mapping to it, else its Ensembl ID."""
    names = {}
    for name, tok in zip(adata.var_names, var_tokens(adata, vocab, tokens_key), strict=True):
        if tok != vocab.pad_id:
            names.setdefault(int(tok), str(name))
    return names


def _store(adata, key, records, plan, vocab, states, params, tokens_key, *, test, random_state):
    state_names = [str(s) for s in states] or ["original"]
    if not records or len(records["cell"]) == 0:
        raise ValueError(
            "No cell could be perturbed: no selected cell expresses the requested gene(s) "
            "(or the anchor gene), or no cell is in the start state."
        )
    names = _gene_names(adata, vocab, tokens_key)

    def label(pid: int) -> str:
        return plan.names.get(pid) if plan.mode != ALL else names.get(pid, vocab.id_of_token[pid])

    results = summarize(
        records["perturbation"],
        records["scores"],
        state_names,
        test=test,
        random_state=random_state,
    )
    results.insert(1, "gene", [label(int(p)) for p in results["perturbation"]])
    if plan.mode == ALL:
        results.insert(
            2, "ensembl_id", [vocab.id_of_token[int(p)] for p in results["perturbation"]]
        )
    results["significant"] = results["fdr"] < 0.05
    results = results.sort_values(
        ["state", "fdr", "mean_shift"],
        ascending=[True, True, False],
        key=lambda c: c.map({s: i for i, s in enumerate(state_names)}) if c.name == "state" else c,
        na_position="last",
        ignore_index=True,
    )
    uns = {"params": _h5_safe(params), "results": results, "states": state_names}
    if len(records.get("gene_token", [])):
        frame = pd.DataFrame(
            {
                "perturbation": records["gene_pert"].astype(np.int64),
                "affected": records["gene_token"].astype(np.int64),
                "cosine": records["gene_cosine"],
            }
        )
        shifts = (
            frame.groupby(["perturbation", "affected"], sort=False)["cosine"]
            .agg(["mean", "count"])
            .reset_index()
        )
        shifts.columns = ["perturbation", "affected", "mean_cosine", "n_cells"]
        shifts.insert(1, "gene", [label(int(p)) for p in shifts["perturbation"]])
        shifts.insert(
            3,
            "affected_gene",
            [names.get(int(t), vocab.id_of_token[int(t)]) for t in shifts["affected"]],
        )
        uns["gene_shifts"] = shifts.sort_values("mean_cosine", ignore_index=True)
    adata.uns[key] = uns
    _per_cell(adata, key, records, plan, vocab, tokens_key, label)


def _per_cell(adata, key, records, plan, vocab, tokens_key, label) -> None:
    first = records["scores"][:, 0]
    if plan.mode == ALL:
        var_of_token = {}
        for j, tok in enumerate(var_tokens(adata, vocab, tokens_key)):
            var_of_token.setdefault(int(tok), j)
        cols = np.array([var_of_token.get(int(p), -1) for p in records["perturbation"]])
        keep = cols >= 0
        adata.layers[key] = sp.csr_matrix(
            (first[keep], (records["cell"][keep], cols[keep])), shape=adata.shape, dtype=np.float32
        )
        return
    table = pd.DataFrame(
        np.nan,
        index=adata.obs_names,
        columns=[label(int(p)) for p in plan.groups],
        dtype=np.float32,
    )
    for pid in plan.groups:
        hit = records["perturbation"] == pid
        table.iloc[records["cell"][hit], list(plan.groups).index(pid)] = first[hit]
    adata.obsm[key] = table


def _h5_safe(params: dict) -> dict:
    """Parameters in a form ``.h5ad`` can store (no ``None``; nested values as strings)."""
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, str | int | float | bool) else str(v)
    return out
