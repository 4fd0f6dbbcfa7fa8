"""Helpers the tools share: pooling choice, token blocks, the vocabulary token of each gene,
the resumable chunk-by-chunk run over cells."""

from __future__ import annotations

import time
from collections.abc import Callable

import anndata as ad
import numpy as np
from tqdm.auto import tqdm

from .._anndata import as_csr
from .._settings import settings
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


def run_chunks(
    runner,
    tokens,
    store,
    bounds: tuple[int, int],
    chunk_size: int,
    *,
    on_batch: Callable,
    save: Callable[[], None],
    desc: str,
    show: bool,
) -> None:
    """Run the cells ``bounds = (start, stop)`` chunk by chunk, skipping cells ``store`` has;
    ``on_batch(rows, batch)`` takes each batch's results, cells without tokens get NaN rows.

    Batches are planned over whole chunks, so an interrupted and resumed run forms the same
    batches as an uninterrupted one (results are bitwise identical); progress is saved
    (``save()``) at batch boundaries every ``scgf.settings.checkpoint_interval`` seconds and
    at every chunk's end.
    """
    start, stop = bounds
    last_save = time.monotonic()
    with tqdm(
        total=stop - start,
        initial=int(store.done[start:stop].sum()),
        unit="cells",
        desc=desc,
        disable=not show,
    ) as bar:
        for lo in range(start, stop, chunk_size):
            hi = min(lo + chunk_size, stop)
            done = store.done[lo:hi]
            if done.all():
                continue
            chunk = as_csr(tokens[lo:hi])
            for batch in runner.run(chunk, skip=done, progress=bar):
                on_batch(lo + batch.rows, batch)
                if (
                    store.persistent
                    and time.monotonic() - last_save >= settings.checkpoint_interval
                ):
                    save()
                    last_save = time.monotonic()
            empty = np.flatnonzero((np.diff(chunk.indptr) == 0) & ~done)
            if len(empty):  # cells without tokens: NaN rows
                store.add(lo + empty, np.full((len(empty), store.values_width), np.nan, np.float32))
                bar.update(len(empty))
            save()
            last_save = time.monotonic()
