"""TRAINING on ``transformers.Trainer``: the sibling of the inference engine.

- :mod:`._data`: datasets over the token matrix of one AnnData or many backed files, with
  cell labels or per-token labels;
- :mod:`._collators`: dynamic right-padding for classification, token classification and
  masked language modelling (transformers' own MLM masking, Geneformer's semantics);
- :mod:`._trainer`: a ``Trainer`` that groups batches by the precomputed cell lengths, with a
  fixed number of cells or a token budget per batch;
- :mod:`._arguments`: scgf's default ``TrainingArguments``;
- :mod:`._config`: training-time changes to a checkpoint's config (attention dropout);
- :mod:`._callbacks`: progress lines through scgf's logging, and resuming from the last
  checkpoint;
- :mod:`._multitask`: a shared encoder with one head per task;
- :mod:`._lora`: LoRA/QLoRA through peft, and adapter folders.

Training runs wherever ``Trainer`` runs (CPU, one GPU, ``torchrun``/``accelerate``, DeepSpeed,
FSDP): nothing here is hand-written distributed code.
"""

from ._arguments import training_arguments
from ._callbacks import LogCallback, last_checkpoint
from ._collators import ClassificationCollator, TokenClassificationCollator, masked_lm_collator
from ._config import config_overrides
from ._data import TokenDataset
from ._lora import apply_lora, is_adapter_folder, quantized_backbone_kwargs, save_adapter
from ._multitask import MultiTaskClassifier, MultiTaskOutput
from ._trainer import LengthGroupedTrainer, TokenBudgetBatchSampler

__all__ = [
    "ClassificationCollator",
    "LengthGroupedTrainer",
    "LogCallback",
    "MultiTaskClassifier",
    "MultiTaskOutput",
    "TokenBudgetBatchSampler",
    "TokenClassificationCollator",
    "TokenDataset",
    "apply_lora",
    "config_overrides",
    "is_adapter_folder",
    "last_checkpoint",
    "masked_lm_collator",
    "quantized_backbone_kwargs",
    "save_adapter",
    "training_arguments",
]
