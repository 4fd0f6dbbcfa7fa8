"""Tidy access to the tokens that ``scgf.pp.tokenize`` stored."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import _keys
from .._anndata import rna_modality
from ..models import get_vocabulary
from ..models._resolve import ModelLike
from ..vocab import Vocabulary


def token_matrix(adata: ad.AnnData, key: str = _keys.TOKENS):
    """The stored token matrix (CSR, or a backed sparse dataset) with a clear error if absent."""
    target = rna_modality(adata)
    if key not in target.obsm:
        raise KeyError(
            f"adata.obsm has no {key!r} tokens; run scgf.pp.tokenize(adata, model=...) first "
            f"(or pass the key_added you used)."
        )
    return target.obsm[key]


def token_params(adata: ad.AnnData, key: str = _keys.TOKENS) -> dict:
    """The parameters recorded with the tokens (vocabulary, context, special tokens)."""
    target = rna_modality(adata)
    try:
        return dict(target.uns[key]["params"])
    except KeyError:
        raise KeyError(
            f"adata.uns[{key!r}]['params'] is missing, so the tokens' vocabulary is unknown; "
            "tokenize again with scgf.pp.tokenize."
        ) from None


def check_token_vocabulary(adata: ad.AnnData, vocab: Vocabulary, key: str = _keys.TOKENS) -> None:
    """Refuse tokens that were made with another vocabulary or token layout.

    The vocabularies are compared by content (:attr:`~scgf.vocab.Vocabulary.fingerprint`), not
    by name. Tokens written before fingerprints were recorded are compared by name.
    """
    params = token_params(adata, key)
    made_special = bool(params.get("special_tokens"))
    fingerprint = params.get("vocabulary_fingerprint")
    if fingerprint is not None:
        same = fingerprint == vocab.fingerprint and made_special == vocab.special_tokens
    else:
        same = (params.get("vocabulary"), made_special) == (vocab.name, vocab.special_tokens)
    if not same:
        made = f" (fingerprint {fingerprint})" if fingerprint else ""
        raise ValueError(
            f"adata.obsm[{key!r}] holds {params.get('version')} tokens of the "
            f"{params.get('vocabulary')} vocabulary{made}, but this model reads {vocab.version} "
            f"tokens of the {vocab.name} vocabulary (fingerprint {vocab.fingerprint}). Tokenize "
            "again with this model: scgf.pp.tokenize(adata, model=...), using another key_added "
            "to keep both."
        )


def tokens(
    adata: ad.AnnData,
    *,
    key: str = _keys.TOKENS,
    as_ids: bool = False,
    model: ModelLike | None = None,
) -> list[np.ndarray]:
    """Each cell's tokens in rank order, special tokens included.

    Parameters
    ----------
    adata
        A tokenized AnnData (or MuData; its ``rna`` modality).
    key
        The ``key_added`` used by :func:`scgf.pp.tokenize`.
    as_ids
        Return Ensembl gene IDs (and ``"<cls>"``/``"<eos>"``) instead of token ids.
    model
        The vocabulary to translate ids with when ``as_ids=True``; defaults to the one the
        tokens were made with (published vocabularies only).

    Returns
    -------
    One array per cell, in ``adata``'s row order: ``int32`` token ids, or ``object`` arrays of
    IDs. Cells without vocabulary genes give empty arrays.
    """
    matrix = token_matrix(adata, key)
    vocab = None
    if as_ids:
        vocab = get_vocabulary(
            model if model is not None else token_params(adata, key)["vocabulary"]
        )
    out: list[np.ndarray] = []
    n_obs = matrix.shape[0]
    step = 8192
    for start in range(0, n_obs, step):
        block = matrix[start : min(start + step, n_obs)]
        block = block if sp.issparse(block) else sp.csr_matrix(block)
        block = block.tocsr()
        for i in range(block.shape[0]):
            lo, hi = block.indptr[i], block.indptr[i + 1]
            row = block.data[lo:hi][np.argsort(block.indices[lo:hi], kind="stable")]
            out.append(vocab.tokens_to_ids(row) if vocab is not None else row.astype(np.int32))
    return out
