"""Per-token class probabilities averaged over the cells where each gene occurs (pure torch /
numpy), accumulated batch by batch into (vocabulary × classes) sums and counts."""

from __future__ import annotations

import numpy as np
import torch

from .._pooling import gene_positions


class GeneProbabilities:
    """Running sums of softmax probabilities per token id, and how many cells added to each.

    Memory is (vocabulary × classes), whatever the number of cells: a batch's
    (cells × positions × classes) logits are reduced as soon as they are computed. Sums are
    float64, so the mean does not depend on the order batches arrive in (to rounding).

    Parameters
    ----------
    vocab_size
        Number of token ids.
    n_classes
        Number of classes.
    special_tokens
        Whether cells are ``<cls>`` … ``<eos>`` (V2): those positions are no genes and are
        left out.
    keep_tokens
        Optionally, token ids whose every occurrence (cell, probabilities) is also kept, for
        token-level metrics of a few labelled genes.
    device
        Where the sums live (the model's device).
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        *,
        special_tokens: bool,
        keep_tokens: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ):
        self.special_tokens = special_tokens
        self.sums = torch.zeros(vocab_size, n_classes, dtype=torch.float64, device=device)
        self.counts = torch.zeros(vocab_size, dtype=torch.float64, device=device)
        self.keep = None
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        if keep_tokens is not None:
            self.keep = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self.keep[torch.as_tensor(np.asarray(keep_tokens), device=device)] = True

    def add(self, logits: torch.Tensor, input_ids: torch.Tensor, lengths: torch.Tensor) -> None:
        """Add a padded batch: ``logits`` (cells × positions × classes), its ``input_ids`` and
        ``lengths``."""
        mask = gene_positions(lengths.to(logits.device), logits.shape[1], self.special_tokens)
        tokens = input_ids.to(logits.device)[mask]
        proba = torch.softmax(logits[mask].float(), dim=-1)
        self.sums.index_add_(0, tokens, proba.to(self.sums.dtype))
        self.counts.index_add_(0, tokens, torch.ones_like(tokens, dtype=self.counts.dtype))
        if self.keep is not None:
            hit = self.keep[tokens]
            if bool(hit.any()):
                self.kept.append((tokens[hit].cpu().numpy(), proba[hit].cpu().numpy()))

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (vocabulary × classes), n_cells (vocabulary,))``: the average over
        the cells where each token occurs, NaN rows for tokens that never occurred."""
        sums, counts = self.sums.cpu().numpy(), self.counts.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = sums / counts[:, None]
        return proba, counts.astype(np.int64)

    def occurrences(self) -> tuple[np.ndarray, np.ndarray]:
        """Every kept occurrence: ``(token ids (n,), probabilities (n × classes))``."""
        if not self.kept:
            return np.zeros(0, np.int64), np.zeros((0, self.sums.shape[1]), np.float32)
        tokens, proba = zip(*self.kept, strict=True)
        return np.concatenate(tokens), np.concatenate(proba)
