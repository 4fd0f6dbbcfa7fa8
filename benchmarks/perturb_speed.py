"""In silico deletion throughput: scgf.tl.perturb versus the reference's way, same run.

Run: ``python -m benchmarks.perturb_speed [--cells 2] [--quantile 0.25]``.

A model with the real ``gf-12L-95M-i4096`` shape and random weights; real cells of
``pbmc_ifnb_kang2018_2000`` whose token counts sit at the given quantile of that dataset;
``genes="all"`` deletion (one perturbed copy per expressed gene). The baseline follows the
reference: every perturbed copy in fixed batches of 12, fp32 ``BertForMaskedLM`` with all
hidden states (current transformers' default attention), cosine of the ``<cls>`` embeddings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import anndata as ad
import numpy as np
import torch
from tests._reference_forward import padded_forward
from transformers import BertForMaskedLM

import scgf
from benchmarks._data import SHARED, add_dictionaries, real_vocabulary
from benchmarks.embed_speed import SHAPES, random_model


def baseline(folder: str, adata: ad.AnnData) -> dict[tuple[int, int], float]:
    model = BertForMaskedLM.from_pretrained(folder).eval()
    index = model.config.num_hidden_layers - 1
    scores = {}
    for cell, seq in enumerate(scgf.get.tokens(adata)):
        seq = seq.astype(np.int64)
        copies = [np.delete(seq, i) for i in range(1, len(seq) - 1)]
        original = padded_forward(model, [seq], index)[0][0]
        cls = torch.stack([h[0] for h in padded_forward(model, copies, index)])
        cos = torch.nn.CosineSimilarity(dim=-1)(cls, original[None])
        for i, value in enumerate(cos):
            scores[(cell, int(seq[i + 1]))] = float(value)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--quantile", type=float, default=0.25)
    args = parser.parse_args()
    scgf.settings.progress = False
    vocab = real_vocabulary("V2")
    adata = ad.read_h5ad(SHARED / "data" / "pbmc_ifnb_kang2018_2000.h5ad")
    scgf.pp.tokenize(adata, model=vocab)
    lengths = np.diff(adata.obsm["gf_tokens"].indptr)
    target = np.quantile(lengths, args.quantile)
    cells = np.sort(np.argsort(np.abs(lengths - target))[: args.cells])
    subset = adata[cells].copy()
    n_copies = int((lengths[cells] - 2).sum())
    with tempfile.TemporaryDirectory() as folder:
        random_model(SHAPES["gf-12L-95M-i4096"], folder)
        add_dictionaries(folder, "V2")
        t0 = time.perf_counter()
        scgf.tl.perturb(subset, "all", model=folder)
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference = baseline(folder, subset)
        slow = time.perf_counter() - t0
    layer = subset.layers["scgf_perturb"].tocoo()
    tokens = vocab.map_genes(subset.var_names)
    ours = {
        (int(r), int(tokens[c])): float(v)
        for r, c, v in zip(layer.row, layer.col, layer.data, strict=True)
    }
    diff = max(abs(ours[k] - reference[k]) for k in ours)
    print(
        json.dumps(
            {
                "model_shape": "gf-12L-95M-i4096",
                "cells": len(cells),
                "tokens_per_cell": lengths[cells].tolist(),
                "perturbed_copies": n_copies,
                "scgf_copies_per_s": n_copies / fast,
                "baseline_copies_per_s": n_copies / slow,
                "speedup": slow / fast,
                "max_abs_score_diff": diff,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
