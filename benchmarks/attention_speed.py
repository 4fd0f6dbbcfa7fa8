"""Attention readout time against plain ``scgf.tl.embed`` on the same cells, in the same run.

Run: ``python -m benchmarks.attention_speed [--cells 120] [--shapes gf-12L-95M-i4096]``; on a
GPU e.g. ``--shapes Geneformer-V2-104M --device cuda --cells 2000``.

A model with a real Geneformer shape and random weights, real cells
(``pbmc_ifnb_kang2018_2000``) tokenized with the real dictionaries. Timed, interleaved
``--repeats`` times (medians reported): ``scgf.tl.embed`` (its default: ``<cls>`` pooling of
``emb_layer=-1``), ``scgf.tl.attention(gene_pairs=False)`` (the per-cell ``<cls>`` attention,
or received attention on V1) and ``scgf.tl.attention()`` (plus the gene-pair summary). Goal:
the ``<cls>`` attention within 1.5× embed's time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import anndata as ad
import numpy as np
import torch

import scgf
from benchmarks._data import SHARED, add_dictionaries, real_vocabulary
from benchmarks.embed_speed import SHAPES, random_model


def _timed(function, device: str) -> float:
    start = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(name: str, n_cells: int, repeats: int, device: str, dtype: str | None) -> dict:
    shape = SHAPES[name]
    adata = ad.read_h5ad(SHARED / "data" / "pbmc_ifnb_kang2018_2000.h5ad")[:n_cells].copy()
    scgf.pp.tokenize(adata, model=real_vocabulary(shape["version"]))
    lengths = np.diff(adata.obsm["gf_tokens"].indptr)
    options = dict(device=device, dtype=dtype)
    times: dict[str, list[float]] = {"embed": [], "cls_attention": [], "with_gene_pairs": []}
    with tempfile.TemporaryDirectory() as folder:
        random_model(shape, folder)
        add_dictionaries(folder, shape["version"])
        runs = {
            "embed": lambda: scgf.tl.embed(adata, model=folder, **options),
            "cls_attention": lambda: scgf.tl.attention(
                adata, model=folder, gene_pairs=False, **options
            ),
            "with_gene_pairs": lambda: scgf.tl.attention(adata, model=folder, **options),
        }
        runs["embed"]()  # warm-up: file cache, kernels
        for _ in range(repeats):
            for label, run in runs.items():
                times[label].append(_timed(run, device))
    median = {label: float(np.median(t)) for label, t in times.items()}
    return {
        "model_shape": name,
        "cells": n_cells,
        "median_tokens": float(np.median(lengths)),
        "device": device,
        "dtype": dtype or "default",
        "embed_s": median["embed"],
        "cls_attention_s": median["cls_attention"],
        "with_gene_pairs_s": median["with_gene_pairs"],
        "cls_attention_vs_embed": median["cls_attention"] / median["embed"],
        "with_gene_pairs_vs_embed": median["with_gene_pairs"] / median["embed"],
        "gene_pairs_stored": int(adata.varp["scgf_attention"].nnz),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shapes", nargs="+", default=["Geneformer-V1-10M", "gf-12L-95M-i4096"], choices=SHAPES
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="scgf's precision (default: its own)")
    args = parser.parse_args()
    scgf.settings.progress = False
    scgf.settings.verbosity = "warning"
    results = [
        measure(name, args.cells, args.repeats, args.device, args.dtype) for name in args.shapes
    ]
    results.append({"torch": torch.__version__, "threads": torch.get_num_threads()})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
