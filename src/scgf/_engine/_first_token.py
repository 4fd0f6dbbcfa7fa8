"""A BERT layer evaluated for the first position only (the ``<cls>`` embedding).

When only ``<cls>`` of the layer read is needed, that layer's queries, attention output and
feed-forward are needed for one position, not all of them: keys and values still come from
every position. The arithmetic per position is the one ``BertLayer`` does.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.bert.modeling_bert import BertLayer


def supports_first_token(config) -> bool:
    """Whether the layers of a model with this ``BertConfig`` are plain encoder layers with
    absolute positions (all Geneformer models), which :func:`first_token_layer` reproduces."""
    return (
        getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not config.is_decoder
        and not config.chunk_size_feed_forward
    )


def first_token_layer(
    layer: BertLayer, hidden: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """Output of ``layer`` at position 0 for a padded batch: shape (batch, 1, hidden).

    Parameters
    ----------
    layer
        The layer (evaluation mode).
    hidden
        Its input, (batch, positions, hidden).
    key_mask
        Boolean (batch, positions), True at real tokens; ``None`` when nothing is padded.
    """
    attention = layer.attention.self
    batch, width, _ = hidden.shape
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    first = hidden[:, :1]
    query = attention.query(first).view(batch, 1, heads, head_size).transpose(1, 2)
    key = attention.key(hidden).view(batch, width, heads, head_size).transpose(1, 2)
    value = attention.value(hidden).view(batch, width, heads, head_size).transpose(1, 2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    context = context.transpose(1, 2).reshape(batch, 1, heads * head_size)
    attended = layer.attention.output(context, first)
    return layer.output(layer.intermediate(attended), attended)
