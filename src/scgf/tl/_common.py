"""Helpers the tools share: pooling choice, token blocks, the vocabulary token of each gene."""

from __future__ import annotations

import anndata as ad
import numpy as np

from ..get import check_token_vocabulary, token_params
from ..pp import tokenize


def check_pooling(pooling: str | None, special_tokens: bool) -> str:
    """The pooling to use: ``cls`` on V2 and ``mean`` on V1 by default; ``cls`` needs V2."""
    if pooling is None:
        return "cls" if special_tokens else "mean"
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'.")
    if pooling == "cls" and not special_tokens:
        raise ValueError(
            "pooling='cls' needs a V2 model: V1 cells have no <cls> token. Use pooling='mean'."
        )
    return pooling


def ensure_tokens(adata: ad.AnnData, vocab, tokens_key: str) -> None:
    """Tokenize ``adata`` with ``vocab`` into ``tokens_key`` when it has no tokens there yet;
    otherwise check that the stored tokens were made with ``vocab``."""
    if tokens_key not in adata.obsm:
        tokenize(adata, model=vocab, key_added=tokens_key)
    else:
        check_token_vocabulary(adata, vocab, tokens_key)


def var_tokens(adata: ad.AnnData, vocab, tokens_key: str) -> np.ndarray:
    """Token id of each variable (0, whose row is NaN, for genes outside the vocabulary)."""
    gene_key = token_params(adata, tokens_key).get("gene_key")
    ids = adata.var[gene_key] if gene_key else adata.var_names
    tokens = vocab.map_genes(np.asarray(ids))
    return np.where(tokens >= 0, tokens, vocab.pad_id)
