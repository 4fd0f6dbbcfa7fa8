"""``scgf.tl.embed``: cell and gene embeddings from a Geneformer model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np

from .. import _keys, _logging
from .._anndata import rna_modality
from .._settings import settings
from ..models import DEFAULT_MODEL
from ._common import check_pooling, ensure_tokens, run_chunks, var_tokens

if TYPE_CHECKING:
    import torch

Pooling = Literal["cls", "mean"]


def embed(
    adata: ad.AnnData,
    *,
    model=DEFAULT_MODEL,
    pooling: Pooling | None = None,
    emb_layer: int = -1,
    genes: bool = False,
    groupby: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    quantize: Literal["8bit", "4bit"] | None = None,
    batch_tokens: int | None = None,
    chunk_size: int = 8192,
    tokens_key: str = _keys.TOKENS,
    key_added: str = _keys.EMBEDDING,
    restart: bool = False,
    copy: bool = False,
) -> ad.AnnData | None:
    """Embed cells (and optionally genes) with a Geneformer model.

    Parameters
    ----------
    adata
        A tokenized AnnData (or MuData: its ``rna`` modality). Without tokens under
        ``tokens_key``, the cells are tokenized first with the model's vocabulary (adding
        ``obsm[tokens_key]``). A backed AnnData opened ``"r+"`` is processed chunk by chunk,
        its results written into the file; an interrupted run resumes where it stopped.
    model
        A registry name (downloaded and cached), a local checkpoint folder, or a loaded
        transformers model (``BertForMaskedLM``, a fine-tuned classifier: its encoder is used).
    pooling
        ``"cls"``: the ``<cls>`` token's embedding (the V2 default). ``"mean"``: the mean over
        the gene positions, ``<cls>``/``<eos>`` excluded (the V1 default; the reference's
        ``cell`` mode).
    emb_layer
        Which layer's output to read, with Geneformer's meaning: ``-1`` (default) the
        second-to-last encoder layer's output (``hidden_states[n_layers - 1]``), ``0`` the last
        layer's; more negative values go further down. Layers above it are not run.
    genes
        Also store each gene's contextual embedding averaged over the cells that express it
        in ``adata.varm[key_added]`` (NaN for genes without tokens).
    groupby
        An ``obs`` column (cell type, condition, …): also store each gene's contextual
        embedding averaged over the cells *of each group* that express it, in
        ``adata.varm[f"{key_added}_{group}"]`` (one genes × hidden entry per group, NaN for
        genes no cell of the group expresses; ``/`` in a group name becomes ``_``), the same
        as ``genes=True`` on that group's cells alone. Implies ``genes=True``. Cells whose
        value is missing count for ``varm[key_added]`` only. ``uns[key_added]["groups"]``
        lists each group, its ``varm`` key and its number of cells. Memory: one vocabulary ×
        hidden float64 block of sums per group on the device.
    device
        ``"cuda"``, ``"mps"``, ``"cpu"``; by default the first available in that order.
    dtype
        Compute precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast). Default:
        bf16 on CUDA, float32 elsewhere.
    quantize
        ``"8bit"`` or ``"4bit"`` weights through bitsandbytes (CUDA only, ``scgf[quant]``).
    batch_tokens
        Padded tokens per batch (default 65536 on CUDA, 16384 on MPS, 4096 on CPU). Cells are
        sorted by length and padded to their batch's longest; on CUDA out-of-memory it is
        halved.
    chunk_size
        Cells read and written at a time (bounds memory on backed data). On a backed file,
        progress is also saved every ``scgf.settings.checkpoint_interval`` seconds.
    tokens_key
        Where :func:`scgf.pp.tokenize` stored the tokens.
    key_added
        ``adata.obsm[key_added]`` (float32, input row order, NaN rows for cells without
        tokens), ``adata.varm[key_added]`` with ``genes=True`` and ``adata.uns[key_added]``
        (model, revision, weight sha256, emb_layer, pooling, dtype).
    restart
        On a backed file holding progress of an interrupted run with other cells, tokens,
        model or parameters (which is refused, naming what differs), discard that progress
        and start again.
    copy
        Return an embedded copy instead of modifying ``adata``.

    Returns
    -------
    ``None``, or the embedded copy when ``copy=True``.

    Under ``torchrun --nproc_per_node N`` each process embeds a contiguous block of cells and
    the results are merged in input order on every process.
    """
    import torch

    from .._engine import LayerOutput, Runner, load_model, resolve_device, resolve_dtype
    from .._engine._distributed import shard, sum_across, world
    from .._resume import cells_fingerprint, tokens_fingerprint
    from ._embedding_store import EmbeddingStore, cell_groups
    from ._pooling import accumulate_genes, pool

    data = adata.copy() if copy else adata
    target = rna_modality(data)
    groups = None if groupby is None else cell_groups(target, groupby, key_added)
    genes = genes or groups is not None
    rank, size = world()
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, torch_device)
    loaded = load_model(model, device=torch_device, quantize=quantize)
    vocab = loaded.vocab
    pooling = check_pooling(pooling, vocab.special_tokens)
    if target.n_obs == 0:
        _logging.warn("adata has no cells (n_obs=0): there is nothing to embed.")
    ensure_tokens(target, vocab, tokens_key)
    readout = LayerOutput(loaded, emb_layer, cls_only=pooling == "cls" and not genes)
    runner = Runner(loaded, readout, dtype=compute_dtype, token_budget=batch_tokens)
    start_time = _logging.info(
        f"computing embeddings of {target.n_obs} cells with {loaded.name} "
        f"(emb_layer={emb_layer}, {pooling} pooling)"
    )

    params = {
        **loaded.describe(),
        "emb_layer": emb_layer,
        "pooling": pooling,
        "dtype": str(compute_dtype).removeprefix("torch."),
        "quantize": quantize or "none",
        "vocabulary": vocab.name,
        "tokens_key": tokens_key,
    }
    if groups is not None:  # (only then, so that runs without groups keep their fingerprint)
        params["groupby"] = groupby
    tokens = target.obsm[tokens_key]

    def fingerprint() -> dict:  # only computed where progress can be saved
        return {
            "cells": cells_fingerprint(target.obs_names),
            "tokens": tokens_fingerprint(tokens),
            "genes": genes,
            **({} if groups is None else {"groups": groups.fingerprint()}),
            **params,
        }

    store = EmbeddingStore.open(
        target,
        key_added,
        loaded.hidden_size,
        params,
        fingerprint,
        genes=genes,
        distributed=size > 1,
        restart=restart,
    )
    sums = counts = None
    n_tokens = len(vocab.id_of_token)
    if genes:
        # One block of vocabulary rows for all cells, then one per group (groupby=).
        blocks = 1 + (0 if groups is None else len(groups.names))
        sums = torch.zeros(
            blocks * n_tokens, loaded.hidden_size, dtype=torch.float64, device=torch_device
        )
        counts = torch.zeros(blocks * n_tokens, dtype=torch.float64, device=torch_device)
        if store.gene_sums is not None:
            sums += torch.from_numpy(store.gene_sums).to(torch_device)
            counts += torch.from_numpy(store.gene_counts).to(torch_device)

    def on_batch(rows, batch):
        store.add(rows, pool(batch.output, batch.lengths, pooling, vocab.special_tokens).cpu())
        if sums is not None:
            accumulate_genes(
                batch.output,
                batch.input_ids,
                batch.lengths,
                vocab.special_tokens,
                sums[:n_tokens],
                counts[:n_tokens],
            )
        if groups is not None:
            codes = torch.from_numpy(groups.codes[rows])
            accumulate_genes(
                batch.output,
                batch.input_ids,
                batch.lengths,
                vocab.special_tokens,
                sums[n_tokens:],
                counts[n_tokens:],
                offsets=torch.where(codes >= 0, codes * n_tokens, -1),
            )

    def gene_state():
        # Gene sums are saved only where a later call can resume from them (a file).
        if sums is None or not store.persistent:
            return None
        return sums.cpu().numpy(), counts.cpu().numpy()

    run_chunks(
        runner,
        tokens,
        store,
        shard(target.n_obs, rank, size),
        chunk_size,
        on_batch=on_batch,
        save=lambda: store.save(gene_state()),
        desc="embed",
        show=settings.progress and rank == 0,
    )

    gene_embeddings = None
    group_embeddings = uns_extra = None
    if genes:
        total = sum_across(sums.cpu().numpy())
        n = sum_across(counts.cpu().numpy())
        with np.errstate(invalid="ignore", divide="ignore"):
            per_token = (total / n[:, None]).astype(np.float32)
        rows_of_var = var_tokens(target, vocab, tokens_key)
        gene_embeddings = per_token[rows_of_var]
        if groups is not None:
            group_embeddings = {
                varm_key: per_token[(1 + g) * n_tokens + rows_of_var]
                for g, varm_key in enumerate(groups.varm_keys)
            }
            uns_extra = {"groups": groups.table()}
    store.finish(gene_embeddings, group_embeddings, uns_extra)
    written = f"obsm[{key_added!r}]" + (f", varm[{key_added!r}]" if genes else "")
    if groups is not None:
        written += f" and {len(groups.names)} varm['{key_added}_<group>']"
    _logging.info(f"    finished: added {written}, uns[{key_added!r}]", time=start_time)
    return data if copy else None
