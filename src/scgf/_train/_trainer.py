"""A ``transformers.Trainer`` that groups training batches by the cells' precomputed lengths."""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler


class LengthGroupedTrainer(Trainer):
    """``Trainer`` whose ``group_by_length`` sampling reads the dataset's ``lengths``.

    transformers' own ``LengthGroupedSampler`` does the grouping (batches of similar length,
    longest batch first, shuffled by mega-batch); the lengths come from
    :attr:`~scgf._train.TokenDataset.lengths` instead of reading every example once, which on
    a backed corpus would read it all before the first step. Under ``torchrun``/``accelerate``
    the sampler is sharded by accelerate as usual.
    """

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            generator = torch.Generator().manual_seed(self.args.seed)
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=[int(n) for n in lengths],
                generator=generator,
            )
        return super()._get_train_sampler(train_dataset)
