"""``scgf.pp.tokenize``: the AnnData shell around the rank-value encoding kernels."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .. import _keys, _logging
from .._anndata import count_matrix, iter_row_chunks, rna_modality
from .._settings import settings
from ..models import DEFAULT_MODEL, get_vocabulary
from ..models._resolve import ModelLike
from ..vocab import Vocabulary
from ._checks import InputDataError, check_gene_overlap, check_n_counts, check_raw_counts
from ._rank_encoding import ChunkEncoder, CsrRows, GeneAggregator
from ._token_store import TokenWriter


def tokenize(
    adata: ad.AnnData,
    *,
    model: ModelLike = DEFAULT_MODEL,
    layer: str | None = None,
    gene_key: str | None = None,
    n_counts_key: str | None = "n_counts",
    mask_var: np.ndarray | str | None = None,
    context_size: int | None = None,
    special_tokens: bool | None = None,
    min_overlap: float = 0.1,
    chunk_size: int = 2048,
    key_added: str = _keys.TOKENS,
    inplace: bool = True,
    copy: bool = False,
) -> ad.AnnData | sp.csr_matrix | None:
    """Write each cell as Geneformer's rank-value encoding.

    A cell's tokens are its genes that are in the model's vocabulary, ordered by
    ``count / n_counts * 10000 / median`` (descending; the median is the gene's non-zero
    median across the pretraining corpus), truncated to the model's context. V2 models read
    ``<cls>``, the top 4094 genes, ``<eos>``; V1 models the top 2048 genes. Identifiers are
    upper-cased, Ensembl version suffixes dropped, and symbols, aliases and retired IDs mapped
    through the vocabulary; columns that map to the same gene are summed.

    The arithmetic matches Geneformer's reference tokenizer bit for bit. Genes with exactly
    equal scores (they share a median and a count) are ordered by ascending token id, i.e.
    ascending Ensembl ID; the reference leaves that order to NumPy's unstable sort.
    Differences to the reference, on purpose: an ID listed twice is summed once (the reference
    tokenizes it twice), cells without vocabulary genes keep their row (with an empty token
    sequence and a warning) instead of being dropped, ``n_counts`` defaults to the row sums
    when ``obs`` has none, and V1 vocabularies also accept gene symbols.

    Parameters
    ----------
    adata
        Raw counts (cells × genes) in ``X`` or ``layer``: CSR, CSC, dense, or a backed AnnData
        (``anndata.read_h5ad(path, backed="r+")``, read and written chunk by chunk). For a
        MuData, the ``rna`` modality is used.
    model
        The model whose vocabulary to use: a registry name (only its dictionaries are
        downloaded), ``"V1"``/``"V2"``, a local checkpoint folder, or a
        :class:`~scgf.vocab.Vocabulary`.
    layer
        Layer holding raw counts; ``None`` for ``X``.
    gene_key
        ``var`` column with gene identifiers (Ensembl IDs or symbols); ``None`` for
        ``var_names``.
    n_counts_key
        ``obs`` column with each cell's total count, as the reference requires. When it is
        ``None`` or absent, the row sums over all genes of the count matrix are used.
    mask_var
        Boolean mask or ``var`` column of genes to consider; other genes are ignored.
    context_size
        Tokens per cell including special tokens; defaults to the model's (2048 V1,
        4096 V2). A smaller value keeps fewer top genes.
    special_tokens
        Whether to wrap cells in ``<cls>``/``<eos>``; defaults to the model's (V2 yes, V1 no).
    min_overlap
        Fewest fraction of genes that must be in the vocabulary before tokenizing is refused.
    chunk_size
        Cells processed at once; bounds memory on backed input.
    key_added
        Tokens go to ``adata.obsm[key_added]``, parameters to ``adata.uns[key_added]``.
    inplace
        Store the tokens in ``adata``; if ``False`` return the token matrix instead.
    copy
        Return a tokenized copy instead of modifying ``adata``.

    Returns
    -------
    ``None`` (tokens stored in ``adata``), a tokenized copy when ``copy=True``, or the token
    matrix when ``inplace=False``.

    The token matrix is a CSR matrix of shape ``(n_obs, context_size)`` whose row ``i`` holds
    cell ``i``'s token ids at columns ``0 … length-1``; read it with :func:`scgf.get.tokens`.
    ``adata.uns[key_added]["params"]`` records the vocabulary, context and special tokens.
    """
    if copy and not inplace:
        raise ValueError("copy=True returns a tokenized copy and needs inplace=True.")
    data = adata
    if copy:
        if rna_modality(adata).isbacked:
            raise ValueError("copy=True is not possible on a backed AnnData; use inplace=False.")
        data = adata.copy()
    target = rna_modality(data)
    vocab = get_vocabulary(model)
    start = _logging.info(f"tokenizing {target.n_obs} cells with the {vocab.name} vocabulary")
    if target.n_obs == 0:
        _logging.warn("adata has no cells (n_obs=0): there is nothing to tokenize.")
    context, special = _context(vocab, context_size, special_tokens)
    matrix = count_matrix(target, layer)
    column_tokens = _column_tokens(target, vocab, gene_key, mask_var, min_overlap)
    aggregator = GeneAggregator.build(
        column_tokens, vocab.inverse_median, np.result_type(matrix.dtype, np.float32)
    )
    n_counts_obs = _n_counts(target, n_counts_key)

    writer = TokenWriter.for_target(target, key_added, context, stream=inplace)
    try:
        _encode_all(
            target,
            matrix,
            n_counts_obs,
            n_counts_key,
            aggregator,
            vocab,
            context,
            special,
            chunk_size,
            writer,
            source=f"layers[{layer!r}]" if layer else "X",
        )
    except BaseException:
        writer.abort()
        raise

    params = {
        **vocab.describe(),
        "context_size": context,
        "special_tokens": special,
        "model": model if isinstance(model, str) else getattr(model, "name", str(model)),
        "layer": layer,
        "gene_key": gene_key,
        "n_counts_key": n_counts_key if n_counts_obs is not None else None,
        "n_genes_in_vocabulary": len(aggregator.tokens),
    }
    result = writer.finish(params)
    n_empty = writer.n_empty
    if n_empty:
        _logging.warn(
            f"{n_empty} of {target.n_obs} cells have no counts on vocabulary genes; they keep "
            "their row with an empty token sequence, and later tools give them NaN results.",
        )
    added = f": added obsm[{key_added!r}], uns[{key_added!r}]" if inplace else ""
    _logging.info(f"    finished{added}", time=start)
    if not inplace:
        return result
    return data if copy else None


def _encode_all(
    target: ad.AnnData,
    matrix,
    n_counts_obs: np.ndarray | None,
    n_counts_key: str | None,
    aggregator: GeneAggregator,
    vocab: Vocabulary,
    context: int,
    special: bool,
    chunk_size: int,
    writer: TokenWriter,
    source: str,
) -> None:
    """Check and encode every chunk of cells, handing the tokens to ``writer`` in order.

    Chunks are read in this thread (backed files are not thread-safe) and encoded on
    ``scgf.settings.n_jobs`` threads; the compiled kernel and NumPy's sorts release the GIL.
    """
    encoder = ChunkEncoder(
        aggregator,
        context=context,
        cls_id=vocab.cls_id if special else None,
        eos_id=vocab.eos_id if special else None,
        n_entries=_n_entries(matrix),
    )

    def encode(start: int, rows: CsrRows, given: np.ndarray | None) -> sp.csr_matrix:
        if not encoder.compiled:  # the compiled kernel checks the values as it reads them
            check_raw_counts(rows.to_scipy(), start, target.obs_names, source)
        tokens, totals = encoder.encode(rows, given)
        if tokens is None:  # a value that is not a raw count: name it
            check_raw_counts(rows.to_scipy(), start, target.obs_names, source)
            tokens, totals = encoder.encode(rows, given, check=False)  # it passed after all
        if not _totals_ok(rows, totals):  # raises, naming the cell
            key = n_counts_key or "row sums"
            check_n_counts(totals, rows.to_scipy(), start, target.obs_names, key)
        return tokens

    n_jobs = max(1, settings.n_jobs)
    pending: deque[tuple[int, Future]] = deque()
    with (
        tqdm(
            total=target.n_obs, unit="cells", desc="tokenize", disable=not settings.progress
        ) as bar,
        ThreadPoolExecutor(max_workers=n_jobs) as pool,
    ):

        def collect() -> None:
            n_cells, future = pending.popleft()
            writer.add(future.result())
            bar.update(n_cells)

        try:
            for start, stop, rows in _row_chunks(matrix, chunk_size):
                totals = None if n_counts_obs is None else n_counts_obs[start:stop]
                pending.append((stop - start, pool.submit(encode, start, rows, totals)))
                if len(pending) > n_jobs:
                    collect()
            while pending:
                collect()
        finally:
            for _, future in pending:
                future.cancel()


def _totals_ok(rows: CsrRows, totals: np.ndarray) -> bool:
    """Whether every cell with counts has a positive total (what ``check_n_counts`` checks,
    without building a scipy matrix)."""
    has_counts = np.diff(rows.indptr) > 0
    return not (has_counts & ~(np.asarray(totals, dtype=np.float64) > 0)).any()


def _n_entries(matrix) -> int:
    """Stored entries of an in-memory or backed count matrix (all entries when dense)."""
    if sp.issparse(matrix):
        return int(matrix.nnz)
    group = getattr(matrix, "group", None)  # anndata's backed sparse dataset
    if group is not None and "data" in group:
        return int(group["data"].shape[0])
    return int(np.prod(matrix.shape))


def _row_chunks(matrix, chunk_size: int) -> Iterator[tuple[int, int, CsrRows]]:
    """Row chunks of any count matrix; those of an in-memory CSR matrix are not copied."""
    if sp.issparse(matrix) and matrix.format == "csr":
        for start in range(0, matrix.shape[0], chunk_size):
            stop = min(start + chunk_size, matrix.shape[0])
            yield start, stop, CsrRows.of(matrix, start, stop)
        return
    for start, stop, chunk in iter_row_chunks(matrix, chunk_size):
        yield start, stop, CsrRows.of(chunk)


def _context(vocab: Vocabulary, context_size: int | None, special: bool | None) -> tuple[int, bool]:
    special = vocab.special_tokens if special is None else bool(special)
    if special and not vocab.special_tokens:
        raise ValueError(
            f"The {vocab.name} ({vocab.version}) vocabulary has no <cls>/<eos> tokens: V1 models "
            "read bare genes. Drop special_tokens=True, or use a V2 model (e.g. "
            "'Geneformer-V2-104M')."
        )
    context = vocab.context_size if context_size is None else int(context_size)
    if context > vocab.context_size:
        raise ValueError(
            f"context_size={context} exceeds the {vocab.name} ({vocab.version}) models' context "
            f"of {vocab.context_size} tokens; V1 models read 2048, V2 models 4096."
        )
    if context < 1 + 2 * special:
        raise ValueError(f"context_size={context} leaves no room for genes.")
    return context, special


def _column_tokens(
    adata: ad.AnnData,
    vocab: Vocabulary,
    gene_key: str | None,
    mask_var: np.ndarray | str | Sequence[bool] | None,
    min_overlap: float,
) -> np.ndarray:
    if gene_key is None:
        identifiers = adata.var_names.to_numpy()
    elif gene_key in adata.var:
        identifiers = adata.var[gene_key].to_numpy()
    else:
        raise KeyError(f"No var column {gene_key!r}; adata.var has {list(adata.var.columns)}.")
    tokens = vocab.map_genes(identifiers)
    check_gene_overlap(tokens, identifiers, vocab, adata.var, gene_key, min_overlap)
    if mask_var is not None:
        mask = adata.var[mask_var].to_numpy() if isinstance(mask_var, str) else mask_var
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (adata.n_vars,):
            raise ValueError(f"mask_var must be a boolean mask of length n_vars={adata.n_vars}.")
        tokens = np.where(mask, tokens, -1)
    return tokens


def _n_counts(adata: ad.AnnData, key: str | None) -> np.ndarray | None:
    if key is None or key not in adata.obs:
        return None
    values = adata.obs[key]
    if not pd.api.types.is_numeric_dtype(values):
        raise InputDataError(f"obs[{key!r}] is {values.dtype}, not numeric totals per cell.")
    return values.to_numpy()
