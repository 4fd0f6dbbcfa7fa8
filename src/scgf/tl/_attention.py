"""``scgf.tl.attention``: a Geneformer model's attention per cell and between genes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .. import _keys, _logging
from .._anndata import as_csr, rna_modality
from .._settings import settings
from ..models import DEFAULT_MODEL
from ._common import ensure_tokens, var_tokens

if TYPE_CHECKING:
    import torch


def attention(
    adata: ad.AnnData,
    *,
    model=DEFAULT_MODEL,
    emb_layer: int = -1,
    heads: Literal["mean", "all"] | int | Sequence[int] = "mean",
    gene_pairs: bool = True,
    top_k: int = 50,
    min_cells: int = 3,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    quantize: Literal["8bit", "4bit"] | None = None,
    batch_tokens: int | None = None,
    chunk_size: int = 8192,
    tokens_key: str = _keys.TOKENS,
    key_added: str = _keys.ATTENTION,
    copy: bool = False,
) -> ad.AnnData | None:
    """Read a Geneformer model's attention weights: per cell, and between pairs of genes.

    Attention is read in one layer, the one whose output :func:`scgf.tl.embed` reads with
    the same ``emb_layer``; the layers below run without attentions (through
    ``scaled_dot_product_attention``), the layers above do not run, and the weights are those
    transformers returns with ``output_attentions=True`` and eager attention.

    - **Per cell** (``layers[key_added]``): on V2 models, the attention from ``<cls>`` to each
      gene of the cell; on V1 models (no ``<cls>``), the attention each gene receives,
      averaged over the cell's positions. A sparse (CSR, float32) cells × genes matrix with
      entries only at the genes in the cell's tokens (``<cls>``/``<eos>`` themselves are not
      stored, so a cell's entries sum to a little less than 1).
    - **Between genes** (``varp[key_added]``, with ``gene_pairs=True``): for each ordered pair
      of genes (i, j), the attention from gene i to gene j summed over the cells whose tokens
      hold both and divided by their number; for each gene i the ``top_k`` genes j with the
      largest mean are kept (a sparse genes × genes CSR matrix, row = attending gene).
      ``varp[f"{key_added}_n_cells"]`` holds, at the same entries, the number of cells each
      mean is over. The (positions × positions) weights exist for one batch at a time and are
      reduced to gene-pair sums on the device.

    Parameters
    ----------
    adata
        A tokenized AnnData (or MuData: its ``rna`` modality), held in memory. Without tokens
        under ``tokens_key``, the cells are tokenized first with the model's vocabulary.
    model
        A registry name, a local checkpoint folder, or a loaded transformers model.
    emb_layer
        The layer whose attention is read, named by its output as in :func:`scgf.tl.embed`:
        ``-1`` (default) the second-to-last encoder layer, ``0`` the last one.
    heads
        ``"mean"``: the average over all heads. An int or a list of ints: the average over
        those heads only (e.g. ``heads=3`` for one head). ``"all"``: as ``"mean"``, and also
        each head's per-cell attention in ``layers[f"{key_added}_head{h}"]`` (the gene pairs
        stay averaged over all heads; run ``heads=h`` for one head's pairs).
    gene_pairs
        Also compute the gene × gene summary (``varp``). Its cost is a full attention matrix
        per cell in the layer read; without it only ``<cls>``'s row is computed on V2.
    top_k
        Genes kept per attending gene in ``varp[key_added]``.
    min_cells
        Gene pairs held by fewer cells are left out of ``varp`` (a mean over one or two cells
        is mostly noise).
    device, dtype, quantize, batch_tokens, chunk_size, tokens_key
        As in :func:`scgf.tl.embed`.
    key_added
        ``layers[key_added]``, ``varp[key_added]``, ``varp[f"{key_added}_n_cells"]`` and
        ``uns[key_added]["params"]`` (model, revision, weight sha256, emb_layer, query,
        heads, top_k, min_cells, dtype).
    copy
        Return a copy with the results instead of modifying ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``.

    Notes
    -----
    Gene-pair sums are accumulated densely on the device when at most 16384 distinct
    vocabulary genes occur in ``adata.var`` and the cells' tokens (n² float32 sums and int32
    counts, 2 GiB at 16384), and otherwise sparsely: each batch's pairs are reduced on the
    device to one entry per distinct pair and merged on the host, so memory grows with the
    gene pairs that occur together in some cell, never with the vocabulary squared. A gene's
    value is written at the first variable that maps to its vocabulary token.

    Under ``torchrun --nproc_per_node N`` each process reads the attention of a contiguous
    block of cells; the per-cell entries and gene-pair sums are merged so that every process
    ends with the same results as one process would.
    """
    import torch

    from .._engine import Runner, load_model, resolve_device, resolve_dtype
    from .._engine._distributed import gather_records, shard, world
    from .._engine._readouts import AttentionMaps, layer_count
    from ._attention_kernels import batch_genes, cell_entries, pair_accumulator, pair_entries

    _check_counts(top_k, min_cells)
    data = adata.copy() if copy else adata
    target = rna_modality(data)
    if target.isbacked:
        raise ValueError(
            "scgf.tl.attention needs an AnnData in memory (it writes layers and varp); "
            "read the file without backed= (or run it on a subset: adata[mask].to_memory())."
        )
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, torch_device)
    loaded = load_model(model, device=torch_device, quantize=quantize)
    vocab = loaded.vocab
    layer_count(loaded.n_layers, emb_layer)  # a clear message for an out-of-range layer
    n_heads = loaded.encoder.encoder.layer[0].attention.self.num_attention_heads
    selected, keep_heads = _check_heads(heads, n_heads)
    query = "cls" if vocab.special_tokens else "mean"
    readout = AttentionMaps(loaded, emb_layer, query=query, heads=selected, pairs=gene_pairs)
    if target.n_obs == 0:
        _logging.warn("adata has no cells (n_obs=0): there is no attention to read.")
    ensure_tokens(target, vocab, tokens_key)
    runner = Runner(loaded, readout, dtype=compute_dtype, token_budget=batch_tokens)
    start = _logging.info(
        f"computing attention of {target.n_obs} cells with {loaded.name} "
        f"(emb_layer={emb_layer}, {'<cls>' if query == 'cls' else 'received'} attention"
        f"{', gene pairs' if gene_pairs else ''})"
    )

    # Compact gene numbering over the vocabulary tokens that some variable maps to and some
    # cell holds (this bounds the dense pair accumulator by the genes actually seen).
    tokens = target.obsm[tokens_key]
    token_of_var = var_tokens(target, vocab, tokens_key)
    genes_tokens, first_var = np.unique(token_of_var, return_index=True)
    in_vocab = (genes_tokens != vocab.pad_id) & np.isin(genes_tokens, as_csr(tokens).data)
    genes_tokens, var_of_gene = genes_tokens[in_vocab], first_var[in_vocab]
    n_genes = len(genes_tokens)
    gene_of_token = torch.full((len(vocab.id_of_token),), -1, dtype=torch.long)
    gene_of_token[torch.from_numpy(genes_tokens)] = torch.arange(n_genes)
    gene_of_token = gene_of_token.to(torch_device)
    pairs = pair_accumulator(n_genes, torch_device) if gene_pairs else None

    rank, size = world()
    first, stop = shard(target.n_obs, rank, size)
    cells, cols, values = [], [], []
    with tqdm(
        total=stop - first,
        unit="cells",
        desc="attention",
        disable=not (settings.progress and rank == 0),
    ) as bar:
        for lo in range(first, stop, chunk_size):
            chunk = as_csr(tokens[lo : min(lo + chunk_size, stop)])
            for batch in runner.run(chunk, progress=bar):
                summary, maps = batch.output
                ids = batch.input_ids.to(torch_device)
                genes = batch_genes(ids, batch.lengths, vocab.special_tokens, gene_of_token)
                rows, gene, value = cell_entries(summary, genes, selected, keep_heads)
                cells.append(lo + batch.rows[rows])
                cols.append(var_of_gene[gene])
                values.append(value)
                if pairs is not None:
                    for keys, weights in pair_entries(maps, genes, n_genes):
                        pairs.add(keys, weights)
            bar.update(int((np.diff(chunk.indptr) == 0).sum()))  # cells without tokens

    width = 1 + n_heads if keep_heads else 1
    entries = gather_records(
        {
            "cells": np.concatenate(cells) if cells else np.empty(0, np.int64),
            "cols": np.concatenate(cols) if cols else np.empty(0, np.int64),
            "values": np.concatenate(values) if values else np.empty((0, width), np.float32),
        }
    )
    cells, cols, values = entries["cells"], entries["cols"], entries["values"]

    def per_cell(column: int) -> sp.csr_matrix:
        matrix = sp.csr_matrix(
            (values[:, column].astype(np.float32), (cells, cols)),
            shape=target.shape,
            dtype=np.float32,
        )
        matrix.sort_indices()
        return matrix

    target.layers[key_added] = per_cell(0)
    written = [f"layers[{key_added!r}]"]
    if keep_heads:
        for h in range(n_heads):
            target.layers[f"{key_added}_head{h}"] = per_cell(1 + h)
        written.append(f"layers['{key_added}_head0..{n_heads - 1}']")
    if pairs is not None:
        _store_pairs(target, key_added, _pairs_across(pairs), var_of_gene, top_k, min_cells)
        written += [f"varp[{key_added!r}]", f"varp['{key_added}_n_cells']"]
    target.uns[key_added] = {
        "params": {
            **{k: v for k, v in loaded.describe().items() if v is not None},
            "emb_layer": emb_layer,
            "query": query,
            "heads": heads if isinstance(heads, str) else np.asarray(selected, dtype=np.int64),
            "n_heads": n_heads,
            "gene_pairs": gene_pairs,
            "top_k": top_k,
            "min_cells": min_cells,
            "pair_accumulator": pairs.kind if pairs is not None else "none",
            "dtype": str(compute_dtype).removeprefix("torch."),
            "quantize": quantize or "none",
            "vocabulary": vocab.name,
            "tokens_key": tokens_key,
        }
    }
    written.append(f"uns[{key_added!r}]")
    _logging.info(f"    finished: added {', '.join(written)}", time=start)
    return data if copy else None


def _check_counts(top_k: int, min_cells: int) -> None:
    for name, value in (("top_k", top_k), ("min_cells", min_cells)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r} must be a whole number of at least 1.")


def _check_heads(heads, n_heads: int) -> tuple[list[int], bool]:
    """The heads averaged, and whether each head is also kept."""
    if isinstance(heads, str):
        if heads not in ("mean", "all"):
            raise ValueError(f"heads={heads!r}; use 'mean', 'all', a head number or a list.")
        return list(range(n_heads)), heads == "all"
    chosen = [heads] if isinstance(heads, int | np.integer) else list(heads)
    bad = [h for h in chosen if not isinstance(h, int | np.integer) or not 0 <= h < n_heads]
    if not chosen or bad:
        raise ValueError(
            f"heads={heads!r}: this model has {n_heads} attention heads per layer, numbered "
            f"0 to {n_heads - 1}."
        )
    return sorted({int(h) for h in chosen}), False


def _pairs_across(pairs) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(n_genes, (keys, sums, counts))`` of the gene pairs of every process (under
    ``torchrun`` each process holds its block of cells' sums)."""
    import torch

    from .._engine._distributed import gather_records, sum_across, world
    from ._attention_kernels import coalesce

    if world()[1] == 1:
        return pairs.n_genes, pairs.result()
    if pairs.kind == "dense":  # the same (n_genes + 1)² layout everywhere: add element-wise
        device = pairs.sums.device
        pairs.sums = torch.from_numpy(sum_across(pairs.sums.cpu().numpy())).to(device)
        pairs.counts = torch.from_numpy(sum_across(pairs.counts.cpu().numpy())).to(device)
        return pairs.n_genes, pairs.result()
    merged = gather_records(dict(zip(("keys", "sums", "counts"), pairs.result(), strict=True)))
    return pairs.n_genes, coalesce(merged["keys"], merged["sums"], merged["counts"])


def _store_pairs(target, key, pairs, var_of_gene, top_k, min_cells) -> None:
    from ._attention_kernels import top_pairs

    n_genes, result = pairs
    query, key_gene, means, counts = top_pairs(*result, n_genes, top_k, min_cells)
    rows, cols = var_of_gene[query], var_of_gene[key_gene]
    shape = (target.n_vars, target.n_vars)
    mean = sp.csr_matrix((means.astype(np.float32), (rows, cols)), shape=shape)
    n_cells = sp.csr_matrix((counts.astype(np.int32), (rows, cols)), shape=shape)
    for matrix in (mean, n_cells):
        matrix.sort_indices()
    target.varp[key] = mean
    target.varp[f"{key}_n_cells"] = n_cells
