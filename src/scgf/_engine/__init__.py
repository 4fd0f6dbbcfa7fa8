"""The shared model runner used by embed, perturb and predict."""

from ._batching import plan_batches
from ._device import resolve_device, resolve_dtype
from ._loading import LoadedModel, load_model, truncated_encoder
from ._runner import Runner, layer_count, padded_batch

__all__ = [
    "LoadedModel",
    "Runner",
    "layer_count",
    "load_model",
    "padded_batch",
    "plan_batches",
    "resolve_device",
    "resolve_dtype",
    "truncated_encoder",
]
