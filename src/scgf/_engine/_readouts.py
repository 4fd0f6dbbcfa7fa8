"""What the runner reads from a model for each batch: a layer's hidden states, ``<cls>`` of a
layer, classifier logits, or attention summaries.

A readout holds the part of the model it needs (never more: layers above the one read, the
pooler and any head it does not use are not run) and maps one padded batch, already on the
device, to a float32 tensor. The runner does the batching, device transfer, precision and
out-of-memory handling around it.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ._first_token import first_token_layer, supports_first_token
from ._loading import LoadedModel, truncated_encoder


def layer_count(n_layers: int, emb_layer: int) -> int:
    """Encoder layers to run for Geneformer's ``emb_layer`` (``0`` = last layer's output,
    ``-1`` = second-to-last, i.e. ``hidden_states[n_layers + emb_layer]``)."""
    if not -n_layers <= emb_layer <= 0:
        raise ValueError(
            f"emb_layer={emb_layer} is outside [-{n_layers}, 0] for this {n_layers}-layer model "
            "(0 = last layer's output, -1 = second-to-last, Geneformer's default)."
        )
    return n_layers + emb_layer


class Readout:
    """Base class: ``readout(input_ids, mask, padded)`` → float32 tensor on the device.

    ``input_ids`` is (batch, positions), ``mask`` boolean (batch, positions), True at real
    tokens; ``padded`` says whether any position is padding (known on the host, so no device
    synchronisation is needed to find out).
    """

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor, padded: bool) -> torch.Tensor:
        raise NotImplementedError


class LayerOutput(Readout):
    """Hidden states of the layer ``emb_layer`` (Geneformer's meaning): (batch, positions,
    hidden). Only the layers up to it are run.

    With ``cls_only=True`` the result is (batch, 1, hidden), position 0 (``<cls>``) only, and
    the layer read is evaluated for that position alone (its keys and values still see every
    position), which saves most of one layer.
    """

    def __init__(self, loaded: LoadedModel, emb_layer: int = -1, *, cls_only: bool = False):
        self.emb_layer = emb_layer
        self.cls_only = cls_only
        n_run = layer_count(loaded.n_layers, emb_layer)
        self.top_layer = None
        if cls_only and n_run > 0 and supports_first_token(loaded.encoder.config):
            self.top_layer = loaded.encoder.encoder.layer[n_run - 1]
            n_run -= 1
        self.encoder = truncated_encoder(loaded.encoder, n_run)

    def __call__(self, input_ids, mask, padded):
        out = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        if self.top_layer is not None:
            out = first_token_layer(self.top_layer, out, mask if padded else None)
        if self.cls_only:
            out = out[:, :1]
        return out.float()


class Logits(Readout):
    """The classifier's logits: (batch, classes) for a cell classifier, (batch, positions,
    classes) for a gene (token) classifier, and for a multi-task classifier a dict
    {task: (batch, classes)} in the model's task order. Needs the model loaded with its
    head."""

    def __init__(self, loaded: LoadedModel):
        if loaded.model is loaded.encoder:
            raise ValueError(
                f"{loaded.name} was loaded without a head; load it with head=True to read logits."
            )
        self.model = loaded.model
        self.tasks = getattr(loaded.model.config, "scgf_tasks", None)

    def __call__(self, input_ids, mask, padded):
        logits = self.model(input_ids=input_ids, attention_mask=mask.long()).logits
        if self.tasks:
            return {task: x.float() for task, x in zip(self.tasks, logits, strict=True)}
        return logits.float()


def _heads(projection, hidden: torch.Tensor, attention) -> torch.Tensor:
    """``projection(hidden)`` split into heads: (batch, heads, positions, head size)."""
    batch, width, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    return projection(hidden).view(batch, width, heads, size).transpose(1, 2)


def _weights(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Eager attention weights in float32: softmax of ``q kᵀ / √d`` over the keys, with the
    keys where ``key_mask`` (broadcast to the scores) is False left out."""
    scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    return F.softmax(scores.masked_fill(~key_mask, float("-inf")), dim=-1)


def _received(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The attention each key receives, averaged over the real queries: ``weights`` is
    (batch, [heads,] queries, keys), ``mask`` (batch, positions); result without the query
    axis."""
    shape = (mask.shape[0],) + (1,) * (weights.dim() - 3) + (mask.shape[1], 1)
    real = mask.float().view(shape)
    return (weights * real).sum(-2) / real.sum(-2)


class AttentionSummary(Readout):
    """Attention weights inside the layer whose output is ``emb_layer``, summarised per key.

    ``query="cls"``: the attention from position 0 (``<cls>`` on V2) to every position.
    ``query="mean"``: the attention every position receives, averaged over the real query
    positions (V1 models have no ``<cls>``). Result: (batch, heads, positions), each row a
    distribution over the real positions (padding gets 0). The weights are those of
    ``output_attentions=True`` in transformers' eager attention, computed without keeping the
    full (positions × positions) matrix for ``"cls"``.
    """

    def __init__(self, loaded: LoadedModel, emb_layer: int = -1, *, query: str = "cls"):
        if query not in ("cls", "mean"):
            raise ValueError(f"query={query!r}; use 'cls' or 'mean'.")
        n_run = layer_count(loaded.n_layers, emb_layer)
        if n_run == 0:
            raise ValueError(
                f"emb_layer={emb_layer} is the embedding layer's output, which has no attention."
            )
        self.query = query
        self.layer = loaded.encoder.encoder.layer[n_run - 1]
        self.encoder = truncated_encoder(loaded.encoder, n_run - 1)

    def layer_input(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The hidden states entering the layer read."""
        return self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state

    def __call__(self, input_ids, mask, padded):
        hidden = self.layer_input(input_ids, mask)
        attention = self.layer.attention.self
        queries = hidden[:, :1] if self.query == "cls" else hidden
        q = _heads(attention.query, queries, attention)
        k = _heads(attention.key, hidden, attention)
        weights = _weights(q, k, mask[:, None, None, :])  # (batch, heads, queries, keys)
        return weights[:, :, 0] if self.query == "cls" else _received(weights, mask)


# --- Attention maps for scgf.tl.attention (per-head summaries and gene-pair weights) -------


class AttentionMaps(Readout):
    """Attention in the layer whose output is ``emb_layer``: :class:`AttentionSummary`'s
    per-key summary for every head and, with ``pairs=True``, the full (positions × positions)
    weights averaged over the heads ``heads``.

    Result: a tuple ``(summary, pairs)``: ``summary`` (batch, heads, positions) as
    :class:`AttentionSummary` gives it; ``pairs`` (batch, queries, keys) float32, row ``i``
    the attention of position ``i`` over the real positions (padding keys get 0), or ``None``
    without ``pairs``. The full weights are computed one head at a time, so at most three
    (batch × positions × positions) maps are alive, and only for the layer read: the layers
    below run without attentions and the layers above do not run.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        emb_layer: int = -1,
        *,
        query: str = "cls",
        heads: list[int] | None = None,
        pairs: bool = True,
    ):
        self.summary = AttentionSummary(loaded, emb_layer, query=query)
        n_heads = self.summary.layer.attention.self.num_attention_heads
        self.heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
        self.pairs = pairs

    def __call__(self, input_ids, mask, padded):
        readout = self.summary
        if not self.pairs:
            return readout(input_ids, mask, padded), None
        hidden = readout.layer_input(input_ids, mask)
        attention = readout.layer.attention.self
        q = _heads(attention.query, hidden, attention)
        k = _heads(attention.key, hidden, attention)
        batch, n_heads, width, _ = q.shape
        summary = torch.empty(batch, n_heads, width, dtype=torch.float32, device=hidden.device)
        pairs = torch.zeros(batch, width, width, dtype=torch.float32, device=hidden.device)
        for h in range(n_heads):
            weights = _weights(q[:, h], k[:, h], mask[:, None, :])  # (batch, queries, keys)
            summary[:, h] = weights[:, 0] if readout.query == "cls" else _received(weights, mask)
            if h in self.heads:
                pairs += weights
            del weights
        pairs /= len(self.heads)
        return summary, pairs
