"""INFERENCE: the shared model runner used by embed, perturb and (later) predict and attention.

- :mod:`._loading`: a resolved model on its device, with or without its head;
- :mod:`._batching`: length-sorted, token-budgeted, padded batches from a token matrix or a
  list of sequences;
- :mod:`._readouts`: what is read per batch (a layer, ``<cls>`` of a layer, logits, attention);
- :mod:`._runner`: the loop (precision, no gradients, CUDA out-of-memory back-off);
- :mod:`._device`, :mod:`._distributed`: device/precision choice and ``torchrun`` sharding.
"""

from ._batching import TokenMatrix, TokenSequences, as_source, plan_batches
from ._device import resolve_device, resolve_dtype
from ._loading import LoadedModel, encoder_of, load_model, truncated_encoder
from ._readouts import AttentionSummary, LayerOutput, Logits, Readout, layer_count
from ._runner import BatchResult, Runner

__all__ = [
    "AttentionSummary",
    "BatchResult",
    "LayerOutput",
    "LoadedModel",
    "Logits",
    "Readout",
    "Runner",
    "TokenMatrix",
    "TokenSequences",
    "as_source",
    "encoder_of",
    "layer_count",
    "load_model",
    "plan_batches",
    "resolve_device",
    "resolve_dtype",
    "truncated_encoder",
]
