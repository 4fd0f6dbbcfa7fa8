"""A ``transformers.Trainer`` that groups training batches by the cells' precomputed lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Trainer


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

        generator = torch.Generator().manual_seed(self.seed + 1009 * self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class LengthGroupedTrainer(Trainer):
    """``Trainer`` whose ``group_by_length`` sampling reads the dataset's ``lengths``.

    transformers' own length grouping does the work; the lengths come from
    :attr:`~scgf._train.TokenDataset.lengths` instead of reading every example once, which on
    a backed corpus would read it all before the first step. Evaluation and prediction run in
    dataset order (transformers 5 would length-group and shuffle them too, so predictions
    would no longer map to cells). Under ``torchrun``/``accelerate`` the samplers are sharded
    by accelerate as usual.
    """

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            return EpochSeededLengthSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                [int(n) for n in lengths],
                self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        if eval_dataset is None:
            return None
        return (
            torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        )
