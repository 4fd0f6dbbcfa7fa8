"""Inputs of the fine-tuning tests: a tiny V2 model folder that works offline, and a
constructed task on real cells whose answer is known (is a marker gene in a cell's top
ranks?)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from transformers import BertForMaskedLM

import scgf
from tests._tiny import tiny_config, torch_threads
from tests.conftest import DATA, DICTS

TOP = 24  # genes kept per cell (short cells keep the tests fast)


def quick_training():
    """Generator of a fixture: tiny models train many times faster on one thread than on
    contended cores, and transformers' ``gc.collect()`` at every training start costs a
    second in a test process full of objects unless those are frozen first."""
    import gc

    with torch_threads(1):
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()


def tiny_model(
    folder: Path,
    *,
    seed: int = 0,
    layers: int = 1,
    hidden: int = 64,
    attention_dropout: float = 0.0,
) -> Path:
    """A random V2-shaped ``BertForMaskedLM`` plus the real V2 dictionaries (no hidden
    dropout; ``attention_dropout`` on the attention weights)."""
    torch.manual_seed(seed)
    config = tiny_config("V2", hidden=hidden, layers=layers)
    config.initializer_range = 0.02
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = attention_dropout
    BertForMaskedLM(config).save_pretrained(folder)
    for name in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict"):
        (folder / f"{name}_gc104M.pkl").write_bytes((DICTS / f"{name}_gc95M.pkl").read_bytes())
    return folder


def truncate(tokens: sp.csr_matrix, top: int | np.ndarray) -> sp.csr_matrix:
    """Each cell's <cls>, its ``top`` highest-ranked genes (a number per cell, or one for
    all) and <eos>."""
    rows = []
    tops = np.broadcast_to(np.asarray(top), tokens.shape[:1])
    for i in range(tokens.shape[0]):
        row = tokens.data[tokens.indptr[i] : tokens.indptr[i + 1]]
        row = row[np.argsort(tokens.indices[tokens.indptr[i] : tokens.indptr[i + 1]])]
        rows.append(np.concatenate([row[: int(tops[i]) + 1], [3]]))
    lengths = np.array([len(r) for r in rows])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([np.arange(n) for n in lengths])
    return sp.csr_matrix(
        (np.concatenate(rows).astype(np.int32), indices, indptr), shape=tokens.shape
    )


def marker_cells(model: Path, n_cells: int = 700) -> tuple[ad.AnnData, int]:
    """Real pbmc68k cells, tokenized and cut to their top ``TOP`` genes, labelled by whether
    the gene closest to half the cells' top ranks is among them; returns (cells, token)."""
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:n_cells].copy()
    scgf.pp.tokenize(adata, model=model)
    tokens = truncate(adata.obsm["gf_tokens"].tocsr(), TOP)
    adata.obsm["gf_tokens"] = tokens
    genes = tokens.data[(tokens.data > 3)]
    counts = np.bincount(genes)
    marker = int(np.argmin(np.abs(counts - 0.5 * adata.n_obs)))
    present = np.array([marker in tokens[i].data for i in range(adata.n_obs)])
    adata.obs["marker"] = np.where(present, "high", "low")
    return adata, marker
