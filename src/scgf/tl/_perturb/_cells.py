"""Per-cell runs of in silico perturbation: a cell's original and perturbed copies through the
shared runner, scored batch by batch."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..._engine import Runner
from .._pooling import pool
from ._checkpoint import RECORD_KEYS
from ._plan import Plan
from ._scores import aligned_gene_cosines, alignment, cosine, state_shifts
from ._tokens import changes_anything
from ._tokens import perturb as perturb_tokens


class CellPerturber:
    """Runs one cell's original and perturbed copies and scores them.

    The copies go through :meth:`Runner.run` like any cells (length-sorted, token-budgeted,
    with the CUDA out-of-memory back-off), and only one batch of their hidden states is held
    at a time: a cell of n genes has n copies.
    """

    def __init__(
        self,
        runner: Runner,
        plan: Plan,
        perturb_type: str,
        pooling: str,
        vocab,
        state_embs: torch.Tensor | None,
        gene_shifts: bool,
        rank_shift: float,
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

    @property
    def _needs_genes(self) -> bool:
        return (self.pooling == "mean" and self.states is None) or self.gene_shifts

    def _pool(self, batch) -> torch.Tensor:
        return pool(batch.output, batch.lengths, self.pooling, self.special)

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

    def _run_original(self, genes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (positions × hidden) and pooled embedding of one unperturbed cell."""
        batch = next(iter(self.runner.run([self._wrap(genes)])))
        return batch.output[0], self._pool(batch)[0].clone()

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
        original_out = {n: self._run_original(o) for n, o in distinct.items()}
        original_length = np.array([len(o) for o in originals])
        gene_cosines = GeneCosines(
            len(copies), [p for p, _ in todo] if self.gene_shifts else None, int(self.special)
        )
        pooled_p = torch.empty(
            len(copies), self.runner.loaded.hidden_size, device=self.runner.device
        )
        for batch in self.runner.run([self._wrap(c) for c in copies]):
            pooled_p[torch.from_numpy(batch.rows)] = self._pool(batch)
            if not self._needs_genes:
                continue
            for length, (hidden_o, _) in original_out.items():
                local = np.flatnonzero(original_length[batch.rows] == length)
                if len(local):
                    gene_cosines.add(
                        batch.rows[local],
                        local,
                        batch.output,
                        hidden_o,
                        distinct[length],
                        copies,
                        targets,
                    )
        pooled_o = torch.stack([original_out[len(o)][1] for o in originals])
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


class GeneCosines:
    """Per-gene cosines between perturbed copies and their original, gathered batch by batch:
    their mean per copy (V1's score) and, for ``gene_shifts``, every (perturbation, gene)."""

    def __init__(self, n_copies: int, perturbation_ids: list[int] | None, offset: int):
        self.offset = offset  # 1 where <cls> precedes the genes
        self.sum = torch.zeros(n_copies, dtype=torch.float64)
        self.count = torch.zeros(n_copies, dtype=torch.float64)
        self.perturbation_ids = None if perturbation_ids is None else np.asarray(perturbation_ids)
        self.records: dict[str, list] = {"gene_pert": [], "gene_token": [], "gene_cosine": []}

    def add(self, which, local, hidden, hidden_original, original, copies, targets) -> None:
        """Score copies ``which`` (indices into all copies), found at batch positions ``local``
        of ``hidden``, against the original's hidden states."""
        pairs = alignment(
            original, [copies[j] for j in which], [targets[j] for j in which], self.offset
        )
        copy_idx = which[pairs[0]]
        cos = (
            aligned_gene_cosines(hidden, hidden_original, (local[pairs[0]], pairs[1], pairs[2]))
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


def state_embeddings(
    labels: np.ndarray, tokens: sp.csr_matrix, runner: Runner, pooling: str, special: bool, states
) -> torch.Tensor:
    """Exact mean embedding of the cells of each state (same model, layer and pooling)."""
    means = []
    lengths = np.diff(tokens.indptr)
    for state in states:
        rows = np.flatnonzero((labels == state) & (lengths > 0))
        total = torch.zeros(runner.loaded.hidden_size, dtype=torch.float64)
        for batch in runner.run(tokens[rows]):
            total += pool(batch.output, batch.lengths, pooling, special).double().sum(0).cpu()
        means.append((total / len(rows)).float())
    return torch.stack(means).to(runner.device)
