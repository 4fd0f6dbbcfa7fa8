"""Embedding throughput: scgf.tl.embed versus the reference's way, in the same run.

Run: ``python -m benchmarks.embed_speed [--cells-v1 240] [--cells-v2 120] [--batches 100 12]``;
on a GPU e.g. ``--shapes Geneformer-V2-104M --device cuda --cells-v2 2000``.

Models have the real shapes of ``Geneformer-V1-10M`` and ``gf-12L-95M-i4096`` with random
weights; cells are real (``pbmc_ifnb_kang2018_2000``), tokenized with the real dictionaries.
The baseline follows the reference (spec §4.2): ``BertForMaskedLM`` in fp32 with
``output_hidden_states=True`` (full forward incl. the MLM head), fixed batches in input order
(``forward_batch_size``: the reference's default 100, and 12), right-padded to the batch's
longest cell. It uses current transformers' default
attention (SDPA), which is faster than the eager attention the reference ran with, so the
ratio is conservative.
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
from transformers import BertConfig, BertForMaskedLM

import scgf
from benchmarks._data import SHARED, add_dictionaries, real_vocabulary

SHAPES = {
    "Geneformer-V1-10M": dict(
        version="V1", layers=6, hidden=256, heads=4, intermediate=512, vocab=25426, context=2048
    ),
    "gf-12L-95M-i4096": dict(
        version="V2", layers=12, hidden=512, heads=8, intermediate=1024, vocab=20275, context=4096
    ),
    "Geneformer-V2-104M": dict(
        version="V2", layers=12, hidden=768, heads=12, intermediate=3072, vocab=20275, context=4096
    ),
    "Geneformer-V2-316M": dict(
        version="V2", layers=18, hidden=1152, heads=18, intermediate=4608, vocab=20275, context=4096
    ),
}


def random_model(shape: dict, folder: str) -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=shape["context"],
        hidden_act="relu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    BertForMaskedLM(config).save_pretrained(folder)


def baseline(
    folder: str, adata: ad.AnnData, special: bool, batch_size: int, device: str, layer: int = -1
) -> np.ndarray:
    model = BertForMaskedLM.from_pretrained(folder).to(device).eval()
    cells = scgf.get.tokens(adata)
    hidden = padded_forward(
        model, cells, model.config.num_hidden_layers + layer, batch_size=batch_size
    )
    return torch.stack([h[0] if special else h.mean(0) for h in hidden]).cpu().numpy()


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, n_cells: int, batches: list[int], device: str, dtype: str | None) -> dict:
    shape = SHAPES[name]
    vocab = real_vocabulary(shape["version"])
    adata = ad.read_h5ad(SHARED / "data" / "pbmc_ifnb_kang2018_2000.h5ad")[:n_cells].copy()
    scgf.pp.tokenize(adata, model=vocab)
    lengths = np.diff(adata.obsm["gf_tokens"].indptr)
    report = {
        "model_shape": name,
        "cells": n_cells,
        "median_tokens": float(np.median(lengths)),
        "device": device,
        "dtype": dtype or "default",
    }
    with tempfile.TemporaryDirectory() as folder:
        random_model(shape, folder)
        add_dictionaries(folder, shape["version"])
        t0 = time.perf_counter()
        scgf.tl.embed(adata, model=folder, device=device, dtype=dtype)
        _synchronize(device)
        fast = time.perf_counter() - t0
        report["scgf_cells_per_s"] = n_cells / fast
        for batch_size in batches:
            t0 = time.perf_counter()
            reference = baseline(folder, adata, shape["version"] == "V2", batch_size, device)
            _synchronize(device)
            slow = time.perf_counter() - t0
            report[f"baseline_batch{batch_size}_cells_per_s"] = n_cells / slow
            report[f"speedup_vs_batch{batch_size}"] = slow / fast
            report[f"max_rel_diff_vs_batch{batch_size}"] = float(
                np.max(np.abs(adata.obsm["X_geneformer"] - reference)) / np.max(np.abs(reference))
            )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells-v1", type=int, default=240)
    parser.add_argument("--cells-v2", type=int, default=120)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 12])
    parser.add_argument(
        "--shapes", nargs="+", default=["Geneformer-V1-10M", "gf-12L-95M-i4096"], choices=SHAPES
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="scgf's precision (default: its own)")
    args = parser.parse_args()
    scgf.settings.progress = False
    results = [
        measure(
            name,
            args.cells_v1 if SHAPES[name]["version"] == "V1" else args.cells_v2,
            args.batches,
            args.device,
            args.dtype,
        )
        for name in args.shapes
    ]
    results.append({"torch": torch.__version__, "threads": torch.get_num_threads()})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
