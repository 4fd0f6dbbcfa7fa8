"""Masking that depends on the cell, the epoch and the seed only, so a resumed run masks
exactly as the uninterrupted one.

transformers' MLM collator draws its masks from one generator in batch order. A data loader
prepares the next batch before the current step runs, so after a resume (the Trainer
restores its random state saved with the checkpoint) the masks would be drawn in another
order and the run would diverge. Here each cell's masks come from a generator seeded with
``(seed, epoch, cell index)``; the masking itself is transformers' (``torch_mask_tokens``:
15 %, 80/10/10, Geneformer's special tokens), applied row by row, then padded as usual.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import TrainerCallback

from ..._train import masked_lm_collator
from ..._train._collators import pad_right
from ..._train._data import IGNORE_INDEX

EVAL_EPOCH = -1  # the held-out cells' masks: the same at every evaluation


class CellMaskCollator:
    """Pads a batch of cells and masks each with its own seeded generator.

    Examples carry ``input_ids`` and ``index`` (the cell's place in the corpus).
    """

    def __init__(self, vocab, *, mlm_probability: float, mask_cls_eos: bool, seed: int, epoch=0):
        self.inner = masked_lm_collator(
            vocab, mlm_probability=mlm_probability, mask_cls_eos=mask_cls_eos
        )
        self.pad_id = vocab.pad_id
        self.seed, self.epoch = int(seed), int(epoch)

    def generator(self, index: int) -> torch.Generator:
        entropy = np.random.SeedSequence([self.seed, self.epoch + 1, int(index)])
        return torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0] >> 1))

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        inputs, labels = [], []
        for example in examples:
            self.inner.generator = self.generator(int(example["index"]))
            masked, target = self.inner.torch_mask_tokens(example["input_ids"][None].clone())
            inputs.append(masked[0])
            labels.append(target[0])
        lengths = torch.tensor([len(x) for x in inputs])
        width = int(lengths.max())
        return {
            "input_ids": pad_right(inputs, self.pad_id),
            "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
            "labels": pad_right(labels, IGNORE_INDEX),
        }


class EpochCallback(TrainerCallback):
    """Tells the collator which epoch its batches belong to."""

    def __init__(self, collator: CellMaskCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = math.floor((state.epoch or 0) + 1e-9)
