"""The pretraining Trainer: length-grouped training batches, and its own collator for the
held-out cells (masked the same way at every evaluation)."""

from __future__ import annotations

from ..._train import LengthGroupedTrainer


class PretrainTrainer(LengthGroupedTrainer):
    """``LengthGroupedTrainer`` with a separate collator for evaluation."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator = self.data_collator
        self.data_collator = self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator
