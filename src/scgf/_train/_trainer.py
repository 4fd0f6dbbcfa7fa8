"""A ``transformers.Trainer`` that groups training batches by the cells' precomputed lengths,
with a fixed number of cells per batch or a token budget per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial

import numpy as np
import torch
from transformers import Trainer

from ._cpu_attention import use_on_cpu


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # one stream per (seed, epoch): a resumed run draws the same batches as a whole one
    return torch.Generator().manual_seed(int(seed) + 1009 * int(epoch))


class EpochSeededLengthSampler(torch.utils.data.Sampler):
    """transformers' length grouping (batches of similar length, longest batch first,
    shuffled by mega-batch) with an order that depends only on (seed, epoch), so a run
    resumed from a checkpoint sees the same batches as an uninterrupted one."""

    def __init__(self, batch_size: int, lengths: Sequence[int], seed: int):
        self.batch_size, self.lengths, self.seed, self.epoch = batch_size, list(lengths), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = _epoch_generator(self.seed, self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def token_budget_sizes(lengths: Sequence[int], max_tokens: int) -> list[int]:
    """Cells per batch when cells sorted longest first are packed greedily into batches whose
    padded size (cells × the batch's longest) is at most ``max_tokens``.

    A cell longer than ``max_tokens`` gets a batch of its own. The sizes depend only on the
    multiset of lengths, not on which cell holds which length.
    """
    ordered = np.sort(np.asarray(lengths, dtype=np.int64))[::-1]
    sizes, start = [], 0
    while start < len(ordered):
        # sorted longest first, so the batch's first cell is its longest
        size = min(max(1, max_tokens // max(int(ordered[start]), 1)), len(ordered) - start)
        sizes.append(size)
        start += size
    return sizes


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Batches of similar-length cells whose padded size stays within a token budget.

    Cells are sorted longest first (cells of equal length in a random order) and packed
    greedily: each batch holds as many cells as fit in ``max_tokens`` padded tokens (cells ×
    its longest cell), so short cells come many to a batch and long ones few; a cell longer
    than the budget gets a batch of its own. The batch holding the longest cell comes first
    (an out-of-memory error shows at the first step), the others in random order.

    The order depends only on (``seed``, epoch): a run resumed from a checkpoint sees the
    same batches as an uninterrupted one, and every epoch another order. The number of
    batches is the same in every epoch (it depends only on the lengths), as
    ``transformers.Trainer`` counts its steps once. It yields lists of dataset indices (a
    ``batch_sampler``); under ``torchrun``/``accelerate`` its batches are dealt out to the
    processes in turn by accelerate's ``BatchSamplerShard``.

    Parameters
    ----------
    lengths
        Every example's token count.
    max_tokens
        The budget of padded tokens per batch.
    seed
        Seed of the order.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0):
        self.max_tokens = check_batch_tokens(max_tokens)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.seed, self.epoch = int(seed), 0
        self.sizes = token_budget_sizes(self.lengths, self.max_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        # a generator: the epoch is read at the first batch, after Trainer's set_epoch
        if not self.sizes:
            return
        generator = _epoch_generator(self.seed, self.epoch)
        ties = torch.randperm(len(self.lengths), generator=generator).numpy()
        order = np.lexsort((ties, -self.lengths))  # longest first, ties at random
        batches = np.split(order, np.cumsum(self.sizes)[:-1])
        rest = (torch.randperm(len(batches) - 1, generator=generator) + 1).tolist()
        for b in [0, *rest]:
            yield batches[b].tolist()


def check_batch_tokens(batch_tokens) -> int:
    """``batch_tokens`` as a positive int, or a clear error."""
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int | np.integer):
        raise TypeError(f"batch_tokens={batch_tokens!r}; give a whole number of tokens.")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; give a positive number of tokens.")
    return int(batch_tokens)


class LengthGroupedTrainer(Trainer):
    """``Trainer`` whose length-grouped sampling reads the dataset's ``lengths``.

    transformers' own length grouping does the work; the lengths come from
    :attr:`~scgf._train.TokenDataset.lengths` instead of reading every example once, which on
    a backed corpus would read it all before the first step. With ``batch_tokens`` the
    training batches are token-budgeted instead (:class:`TokenBudgetBatchSampler`: as many
    similar-length cells per batch as fit in the budget, whatever the sampling strategy;
    ``per_device_train_batch_size`` and ``dataloader_drop_last`` then do not apply to
    training). Evaluation and prediction run in dataset order (transformers 5 would
    length-group and shuffle them too, so predictions would no longer map to cells). Under
    ``torchrun``/``accelerate`` the samplers are sharded by accelerate as usual. A model on
    the CPU with attention dropout trains with :mod:`scgf._train._cpu_attention` (the fused
    attention kernel plus a sparse dropout correction), also when built by ``model_init``.

    Parameters
    ----------
    *args, **kwargs
        ``transformers.Trainer``'s.
    batch_tokens
        Padded tokens per training batch (per process), or ``None`` for
        ``per_device_train_batch_size`` cells per batch.
    """

    def __init__(self, *args, batch_tokens: int | None = None, **kwargs):
        self.batch_tokens = None if batch_tokens is None else check_batch_tokens(batch_tokens)
        self._epoch_sampler = None  # the training order's sampler, for resumed epochs
        super().__init__(*args, **kwargs)
        if self.model is not None:
            use_on_cpu(self.model)

    def call_model_init(self, trial=None):
        model = super().call_model_init(trial)
        use_on_cpu(model)
        return model

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            self._epoch_sampler = EpochSeededLengthSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                [int(n) for n in lengths],
                self.args.seed,
            )
            return self._epoch_sampler
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.batch_tokens is None:
            return super().get_train_dataloader()
        from transformers.trainer_utils import seed_worker

        dataset = self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            raise ValueError(
                f"batch_tokens= needs a training dataset with per-example lengths (scgf's "
                f"TokenDataset); got {type(dataset).__name__}. Use batch_size= instead."
            )
        self._epoch_sampler = TokenBudgetBatchSampler(lengths, self.batch_tokens, self.args.seed)
        args = self.args
        params = dict(
            batch_sampler=self._epoch_sampler,
            collate_fn=self._get_collator_with_removed_columns(self.data_collator, "Training"),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            worker_init_fn=partial(
                seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index
            ),
        )
        if args.dataloader_num_workers > 0:  # torch refuses these without workers
            params["prefetch_factor"] = args.dataloader_prefetch_factor
            params["multiprocessing_context"] = args.dataloader_multiprocessing_context
        # accelerate wraps the batch sampler in its BatchSamplerShard: process i of n takes
        # batches i, i + n, … (the last round topped up from the first batches)
        return self.accelerator.prepare(torch.utils.data.DataLoader(dataset, **params))

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        # Trainer sets the epoch on the samplers it finds through accelerate's wrappers; under
        # torchrun the skipping wrapper of a resumed epoch hides them, so the resumed epoch
        # (counted as Trainer counts it) is set here, before any batch is drawn.
        if self._epoch_sampler is not None:
            accumulation = self.args.gradient_accumulation_steps
            per_epoch = max(math.ceil(len(dataloader) / accumulation), 1)
            self._epoch_sampler.set_epoch(self.state.global_step // per_epoch)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        if eval_dataset is None:
            return None
        return (
            torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        )
