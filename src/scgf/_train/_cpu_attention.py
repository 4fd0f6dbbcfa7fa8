"""Attention dropout at fused-attention speed on CPU.

Geneformer's checkpoints train with 2 % dropout on the attention probabilities. PyTorch's
fused CPU attention kernel has no dropout, so ``scaled_dot_product_attention`` with
``dropout_p > 0`` falls back to the unfused path, which builds every (positions × positions)
probability map, draws a Bernoulli mask for each entry and keeps both for the backward pass;
on CPU that makes a training step several times slower than without dropout.

Here the attention runs in the fused kernel without dropout, and dropout is applied as a
sparse correction. With ``P`` the attention probabilities, ``V`` the values and ``D`` the
dropped entries (each entry dropped independently with probability ``p``)::

    dropout(P) V = (P ⊙ (1 − D)) V / (1 − p) = (P V − (P ⊙ D) V) / (1 − p)

``P V`` is the fused kernel's output; ``P ⊙ D`` has only the ~``p`` share of entries that are
dropped, each ``exp(q·k · scale + mask − logsumexp)`` from the kernel's own log-sum-exp, so
the correction is one sampled matrix product and one sparse-dense product. The backward pass
is the fused kernel's backward, given the corrected output (its row sums ``δ = dO · O`` then
are those of the dropped-out attention), plus the sparse terms of the dropped entries.

The dropped entries are a Bernoulli(``p``) process drawn through geometric gaps (the gap to
the next dropped entry is geometric), which has exactly the distribution of an independent
Bernoulli(``p``) draw per entry while drawing only ~``p`` × entries random numbers. Only the
random stream differs from PyTorch's dropout: the model, the loss and its expected value are
those of training with ``nn.Dropout`` on the attention probabilities.
"""

from __future__ import annotations

import math
import warnings

import torch

NAME = "scgf_cpu_dropout"  # the transformers attention implementation registered here

_fused_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_fused_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def dropped_entries(n: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted flat indices in ``range(n)`` of entries dropped independently with probability
    ``p`` (a Bernoulli process sampled through its geometric gaps)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability p={p} must be strictly between 0 and 1.")
    log_keep = math.log1p(-p)
    parts, start = [], 0
    while start < n:
        remaining = n - start
        draws = int(p * remaining + 6.0 * math.sqrt(remaining * p) + 64)
        uniform = torch.rand(draws, generator=generator, dtype=torch.float64)
        # P(gap = g) = (1 − p)^(g − 1) p for g ≥ 1: the distance to the next dropped entry
        gaps = torch.floor(torch.log1p(-uniform) / log_keep).long() + 1
        positions = start - 1 + torch.cumsum(gaps, 0)
        parts.append(positions[positions < n])
        start = int(positions[-1]) + 1
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: int):
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=(size, size))


class _Pattern:
    """The dropped entries of a (batch·heads·positions)² block-diagonal matrix, in CSR form
    and transposed (rows sorted by column), for the sparse products."""

    def __init__(self, flat: torch.Tensor, batch_heads: int, width: int):
        size = batch_heads * width
        self.size = size
        self.row = flat // width  # (batch·head, query) as one row index
        self.col = (flat // (width * width)) * width + flat % width  # (batch·head, key)
        self.crow = _compressed(self.row, size)
        self.order = torch.argsort(self.col, stable=True)
        self.t_crow = _compressed(self.col[self.order], size)
        self.t_col = self.row[self.order]

    def matrix(self, values: torch.Tensor):
        return _csr(self.crow, self.col, values, self.size)

    def transposed(self, values: torch.Tensor):
        return _csr(self.t_crow, self.t_col, values[self.order], self.size)

    def sampled(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``(left @ right.T)`` at the dropped entries only (one value per entry)."""
        ones = torch.ones(len(self.col), dtype=left.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            product = torch.sparse.sampled_addmm(self.matrix(ones), left, right.T, beta=0.0)
        return product.values()


def _compressed(sorted_rows: torch.Tensor, size: int) -> torch.Tensor:
    crow = torch.zeros(size + 1, dtype=torch.long)
    crow[1:] = torch.bincount(sorted_rows, minlength=size).cumsum(0)
    return crow


class _DropoutAttention(torch.autograd.Function):
    """Fused attention with the dropped entries subtracted (see the module docstring)."""

    @staticmethod
    def forward(ctx, query, key, value, mask, p: float, scale: float, flat):
        batch, heads, width, head_size = query.shape
        out, logsumexp = _fused_forward(query, key, value, 0.0, False, attn_mask=mask, scale=scale)
        pattern = _Pattern(flat, batch * heads, width)
        with torch.autocast("cpu", enabled=False):
            q, k, v = (t.reshape(-1, head_size).float() for t in (query, key, value))
            scores = pattern.sampled(q, k) * scale
            if mask is not None:
                # (batch, 1, queries, keys) contiguous: one flat gather, not four indices
                area = width * width
                at = (flat // (heads * area)) * area + flat % area
                scores = scores + mask.reshape(-1)[at].float()
            probs = torch.exp(scores - logsumexp.reshape(-1)[pattern.row].float())
            dropped = (pattern.matrix(probs) @ v).view(out.shape)
        kept = out - dropped.to(out.dtype)
        ctx.save_for_backward(query, key, value, kept, logsumexp, mask, probs)
        ctx.pattern, ctx.p, ctx.scale = pattern, p, scale
        return kept / (1.0 - p)

    @staticmethod
    def backward(ctx, grad):
        query, key, value, kept, logsumexp, mask, probs = ctx.saved_tensors
        pattern, scale = ctx.pattern, ctx.scale
        head_size = query.shape[-1]
        grad = (grad / (1.0 - ctx.p)).contiguous()
        # The fused backward with the kept output: its δ = rowsum(dO ⊙ O) is the dropped-out
        # attention's; it recomputes P densely, so the dropped entries' terms are removed below.
        d_query, d_key, d_value = _fused_backward(
            grad, query, key, value, kept, logsumexp, 0.0, False, attn_mask=mask, scale=scale
        )
        with torch.autocast("cpu", enabled=False):
            q, k, v, g = (t.reshape(-1, head_size).float() for t in (query, key, value, grad))
            # d scores at a dropped entry: −p_ij (dO_i · v_j), times the scale for q and k
            d_scores = -probs * pattern.sampled(g, v) * scale
            d_q = pattern.matrix(d_scores) @ k
            d_k = pattern.transposed(d_scores) @ q
            d_v = pattern.transposed(-probs) @ g
        shape = query.shape
        return (
            (d_query.float() + d_q.view(shape)).to(query.dtype),
            (d_key.float() + d_k.view(shape)).to(key.dtype),
            (d_value.float() + d_v.view(shape)).to(value.dtype),
            None,
            None,
            None,
            None,
        )


# torch.compile runs it eagerly between compiled parts (its sparse draw has data-dependent
# sizes, which a graph cannot hold); the model around it compiles as usual.
@torch.compiler.disable
def dropout_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    p: float,
    scale: float,
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q kᵀ · scale + mask)`` with dropout ``p`` on the probabilities, times ``v``.

    Parameters
    ----------
    query, key, value
        (batch, heads, positions, head size), on the CPU.
    mask
        ``None``, a boolean mask (True = attend) or an additive float mask, broadcastable to
        (batch, 1, queries, keys).
    p
        Dropout probability of each attention probability.
    scale
        The score scale (``1 / sqrt(head size)`` for BERT).
    dropped
        Sorted flat indices into (batch, heads, queries, keys) of the dropped entries; drawn
        with :func:`dropped_entries` when ``None`` (tests pass their own).

    Returns
    -------
    (batch, heads, positions, head size), in the query's dtype.
    """
    batch, heads, width, _ = query.shape
    if mask is not None:
        mask = mask.expand(batch, 1, width, width)
        if mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=query.dtype)
            mask = additive.masked_fill_(~mask, torch.finfo(query.dtype).min)
        mask = mask.to(query.dtype).contiguous()
    if dropped is None:
        dropped = dropped_entries(batch * heads * width * width, p)
    return _DropoutAttention.apply(
        query.contiguous(), key.contiguous(), value.contiguous(), mask, p, scale, dropped
    )


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
    """A transformers attention implementation: :func:`dropout_attention` when training on
    the CPU with attention dropout, transformers' ``sdpa`` otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    usable = (
        dropout > 0.0
        and query.device.type == "cpu"
        and query.shape[2] == key.shape[2]
        and not kw.get("output_attentions", False)
    )
    if not usable:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    output = dropout_attention(query, key, value, attention_mask, dropout, scale)
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register :func:`attention_forward` (and sdpa's mask format) with transformers under
    :data:`NAME`; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_on_cpu(model) -> bool:
    """Train ``model`` with :func:`dropout_attention` when it sits on the CPU and has attention
    dropout; returns whether it was switched.

    Every model config inside ``model`` that uses ``sdpa`` is switched (a peft wrapper, a
    multi-task model's encoder). Inference and saved models are unaffected: without dropout
    the implementation is transformers' ``sdpa``, and the name is not written to
    ``config.json``.
    """
    configs = {id(m.config): m.config for m in model.modules() if _is_bert_config(m)}
    chosen = [
        config
        for config in configs.values()
        if (getattr(config, "attention_probs_dropout_prob", 0.0) or 0.0) > 0.0
        and config._attn_implementation in ("sdpa", NAME)
    ]
    parameter = next(model.parameters(), None)
    if not chosen or parameter is None or parameter.device.type != "cpu":
        return False
    name = register()
    for config in chosen:
        config._attn_implementation = name
    return True


def _is_bert_config(module) -> bool:
    config = getattr(module, "config", None)
    return config is not None and hasattr(config, "attention_probs_dropout_prob")
