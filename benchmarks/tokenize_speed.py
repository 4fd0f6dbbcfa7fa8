"""Tokenization throughput and memory: scgf versus the reference's per-cell approach.

Run: ``python benchmarks/tokenize_speed.py [--cells 100000] [--baseline-cells 10000]
[--backed-cells 1000000]``. Both methods run in the same process on the same cells; the
baseline follows the reference tokenizer (densify a 512-cell chunk, divide by totals and
medians, ``np.argsort`` per cell) and its tokens are checked against scgf's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import scgf
from benchmarks._data import SOURCE, real_vocabulary, thinned_cells, write_large_backed


def baseline_tokenize(adata, vocab, chunk=512):
    """The reference's way: dense chunks, true division, one argsort per cell."""
    column_tokens = vocab.map_genes(adata.var["ensembl_id"])
    genes = np.flatnonzero(column_tokens >= 0)
    tokens = column_tokens[genes]
    medians = np.array([vocab.medians[vocab.id_of_token[t]] for t in tokens])
    n_counts = adata.obs["n_counts"].to_numpy()
    out = []
    for start in range(0, adata.n_obs, chunk):
        dense = adata.X[start : start + chunk][:, genes].toarray()
        scaled = dense / n_counts[start : start + chunk, None] * 10_000 / medians
        for row in scaled:
            nonzero = np.nonzero(row)[0]
            ranked = tokens[nonzero][np.argsort(-row[nonzero])][: vocab.max_genes]
            out.append(np.concatenate([[vocab.cls_id], ranked, [vocab.eos_id]]))
    return out


def measure_in_memory(n_cells: int, n_baseline: int, source: Path) -> dict:
    vocab = real_vocabulary("V2")
    adata = thinned_cells(n_cells, source=source)
    t0 = time.perf_counter()
    tokens = scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id", inplace=False)
    fast = time.perf_counter() - t0
    subset = adata[:n_baseline].copy()
    t0 = time.perf_counter()
    reference = baseline_tokenize(subset, vocab)
    slow = time.perf_counter() - t0
    # Same genes in the same order, up to ties (the baseline's argsort is unstable).
    same_sets = all(
        set(tokens[i].data) == set(reference[i].tolist()) for i in range(0, n_baseline, 97)
    )
    return {
        "source": source.name,
        "genes": adata.n_vars,
        "cells": n_cells,
        "median_genes_per_cell": float(np.median(np.diff(adata.X.indptr))),
        "scgf_cells_per_s": n_cells / fast,
        "baseline_cells": n_baseline,
        "baseline_cells_per_s": n_baseline / slow,
        "speedup": (n_cells / fast) / (n_baseline / slow),
        "baseline_tokens_agree": same_sets,
    }


_BACKED_CHILD = """
import sys, time, anndata as ad, scgf
sys.path.insert(0, {root!r})
from benchmarks._data import real_vocabulary
scgf.settings.progress = False
vocab = real_vocabulary("V2")
adata = ad.read_h5ad({path!r}, backed="r+")
t0 = time.perf_counter()
scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id", chunk_size=4096)
elapsed = time.perf_counter() - t0
n = adata.n_obs
adata.file.close()
# VmHWM is this process's own peak RSS (ru_maxrss would include the parent's, kept over exec).
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(n, elapsed, peak_kb)
"""


def measure_backed(n_cells: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.h5ad"
        write_large_backed(path, n_cells)
        size_gb = path.stat().st_size / 1e9
        code = _BACKED_CHILD.format(root=str(Path(__file__).resolve().parents[1]), path=str(path))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        n, elapsed, max_rss_kb = out.stdout.split()
    return {
        "backed_cells": int(n),
        "file_gb": round(size_gb, 2),
        "backed_cells_per_s": int(n) / float(elapsed),
        "backed_peak_rss_gb": int(max_rss_kb) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--baseline-cells", type=int, default=10_000)
    parser.add_argument("--backed-cells", type=int, default=1_000_000)
    parser.add_argument(
        "--source", type=Path, default=SOURCE, help="real .h5ad to resample (raw counts)"
    )
    args = parser.parse_args()
    scgf.settings.progress = False
    result = measure_in_memory(args.cells, args.baseline_cells, args.source)
    result["in_memory_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.backed_cells:
        result.update(measure_backed(args.backed_cells))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
