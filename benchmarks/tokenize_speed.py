"""Tokenization throughput and memory: scgf versus the reference's approach.

Run: ``python -m benchmarks.tokenize_speed [--cells 100000] [--baseline-cells 10000]
[--deep-cells 20000] [--deep-baseline-cells 4096] [--deep-baseline-cells-v2 1024]
[--repeats 3] [--backed-cells 1000000] [--no-first-call] [--kernel auto]``.

Three shapes, V1 and V2 vocabularies each:

- typical 10x depth: cells resampled from ``pbmc_sorted_zheng2017_3100`` (~420 genes per
  cell), tokenized by ``var["ensembl_id"]``; the baseline is the reference's ranking written
  lean (densify a 512-cell chunk, divide by totals and medians, one ``np.argsort`` per cell);
- deep cells: ``immune_celltypist_559`` thinned at 0.8 (~1,630 genes per cell), the full
  32,786-gene 10x matrix named by gene symbols, so V2 maps symbols and sums the columns of
  one gene; the baseline follows the reference step by step (ID collapsing with pandas
  sparse sums of each duplicated gene per 512-cell chunk, scipy scaling per chunk, one
  ``np.argsort`` per cell on its CSR row), without its ``datasets`` assembly;
- a large backed ``.h5ad``, tokens streamed into the file (peak memory).

scgf and the baseline run in the same process on the same cells, interleaved ``--repeats``
times (medians reported, with CPU time per cell over all threads); scgf's first call, which
loads the compiled kernel, is reported apart. The baseline's tokens are checked against
scgf's. ``--no-first-call`` skips measuring numba's compile and cache-load time in fresh
processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

import scgf
from benchmarks._data import (
    SHARED,
    SOURCE,
    deep_cells,
    real_vocabulary,
    reference_dictionaries,
    thinned_cells,
    write_large_backed,
)
from scgf.pp import _rank_encoding

ROOT = Path(__file__).resolve().parents[1]


def baseline_tokenize(adata, vocab, chunk=512):
    """The reference's ranking, lean: dense chunks, true division, one argsort per cell."""
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
            if vocab.special_tokens:
                ranked = np.concatenate([[vocab.cls_id], ranked, [vocab.eos_id]])
            out.append(ranked)
    return out


def reference_collapse(
    counts: sp.csr_matrix, ids: np.ndarray, mapping: dict, chunk: int = 512
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The reference's gene-ID collapsing (``sum_ensembl_ids``, h5ad path).

    IDs are mapped through the (upper-case) mapping dictionary. Only when distinct IDs map to
    one gene are columns summed: unmapped columns are dropped and, for each 512-cell chunk,
    the columns of every duplicated gene are selected by name and summed through a pandas
    sparse DataFrame; the sums are appended after the other columns.
    """
    ids = pd.Series(np.asarray(ids, dtype=object))
    in_map = ids[ids.isin(mapping.keys())]  # the reference checks the original case here
    collapsed = ids.str.upper().map(mapping)
    if in_map.nunique() == collapsed[in_map.index].nunique():
        return counts, collapsed.to_numpy()
    keep = collapsed.notna().to_numpy()
    counts = counts[:, keep]
    names = collapsed[keep].to_numpy()
    duplicated = pd.unique(names[pd.Series(names).duplicated(keep=False).to_numpy()])
    blocks = []
    for start in range(0, counts.shape[0], chunk):
        part = counts[start : start + chunk]
        sums = {}
        for gene in duplicated:
            columns = sp.csc_matrix(part[:, names == gene])
            sums[gene] = pd.DataFrame.sparse.from_spmatrix(columns).sum(axis=1).to_numpy()
        blocks.append(pd.DataFrame(sums))
    summed = pd.concat(blocks, ignore_index=True).to_numpy(dtype=counts.dtype)
    unique = ~np.isin(names, duplicated)
    counts = sp.hstack([counts[:, unique], sp.csr_matrix(summed)], format="csr")
    return counts, np.concatenate([names[unique], duplicated])


def reference_tokenize(adata, ids, version: str, dictionaries, chunk: int = 512) -> list:
    """The reference tokenizer's steps, per cell ``(token ids, scores)`` before truncation.

    Collapse IDs, keep token-dictionary genes, scale each 512-cell chunk with scipy's
    sparse operators (``X / n_counts * 10000 / median``), then per cell ``np.argsort`` the
    non-zero scores of its CSR row. Truncation and special tokens (``create_dataset``) are
    cheap and left to the comparison.
    """
    tokens, medians, mapping = dictionaries
    counts, names = reference_collapse(sp.csr_matrix(adata.X), ids, mapping, chunk)
    genes = np.array([i for i, name in enumerate(names) if name in tokens], dtype=np.int64)
    norm = np.array([medians[names[i]] for i in genes])
    gene_tokens = np.array([tokens[names[i]] for i in genes])
    n_counts = adata.obs["n_counts"].to_numpy()
    out = []
    for start in range(0, adata.n_obs, chunk):
        view = counts[start : start + chunk][:, genes]
        scaled = sp.csr_matrix(view / n_counts[start : start + chunk, None] * 10_000 / norm)
        for i in range(scaled.shape[0]):
            row = scaled[i]
            order = np.argsort(-row.data)
            out.append((gene_tokens[row.indices][order], row.data[order]))
    return out


def _agreement(reference: list, tokens: sp.csr_matrix, vocab) -> dict:
    """How many cells carry exactly scgf's tokens (the reference's scores, ties by token id).

    Cells where the reference lists a token twice (an ID given twice, which it does not
    sum) are counted apart.
    """
    same = repeated = 0
    for i, (ranked, scores) in enumerate(reference):
        mine = tokens.data[tokens.indptr[i] : tokens.indptr[i + 1]]
        if vocab.special_tokens and len(mine):
            mine = mine[1:-1]
        if len(np.unique(ranked)) < len(ranked):
            repeated += 1
            continue
        same += np.array_equal(mine, ranked[np.lexsort((ranked, -scores))][: vocab.max_genes])
    return {"cells": len(reference), "identical": same, "reference_repeats_a_gene": repeated}


def _interleaved(runs: dict[str, tuple[Callable, int]], repeats: int) -> dict:
    """Run each method ``repeats`` times, interleaved; median cells/s and CPU-µs per cell."""
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, _) in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for name, (_, n_cells) in runs.items():
        out[f"{name}_cells"] = n_cells
        out[f"{name}_cells_per_s"] = round(n_cells / statistics.median(wall[name]))
        out[f"{name}_cells_per_s_range"] = [
            round(n_cells / max(wall[name])),
            round(n_cells / min(wall[name])),
        ]
        out[f"{name}_cpu_us_per_cell"] = round(statistics.median(cpu[name]) / n_cells * 1e6, 1)
    out["speedup"] = round(out["scgf_cells_per_s"] / out["baseline_cells_per_s"], 1)
    out["cpu_ratio"] = round(out["baseline_cpu_us_per_cell"] / out["scgf_cpu_us_per_cell"], 1)
    return out


def _first_call(run: Callable) -> float:
    t0 = time.perf_counter()
    run()
    return round(time.perf_counter() - t0, 3)


def measure_typical(n_cells: int, n_baseline: int, source: Path, repeats: int) -> dict:
    adata = thinned_cells(n_cells, source=source)
    subset = adata[:n_baseline].copy()
    result = {
        "source": source.name,
        "genes": adata.n_vars,
        "cells": n_cells,
        "median_genes_per_cell": float(np.median(np.diff(adata.X.indptr))),
    }
    for version in ("V2", "V1"):
        vocab = real_vocabulary(version)

        def ours(vocab=vocab):
            return scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id", inplace=False)

        first = _first_call(ours)
        runs = {
            "scgf": (ours, n_cells),
            "baseline": (lambda vocab=vocab: baseline_tokenize(subset, vocab), n_baseline),
        }
        timing = _interleaved(runs, repeats)
        tokens, reference = ours(), baseline_tokenize(subset, vocab)
        # Same genes, up to ties and near-ties (the baseline divides; the reference multiplies).
        same_sets = all(
            set(tokens[i].data) == set(reference[i].tolist()) for i in range(0, n_baseline, 97)
        )
        result[version] = {"scgf_first_call_s": first, **timing, "baseline_same_genes": same_sets}
    return result


def measure_deep(n_cells: int, n_baseline: dict[str, int], repeats: int) -> dict:
    adata = deep_cells(n_cells)
    result = {
        "source": "immune_celltypist_559 (symbols, thinned at 0.8)",
        "genes": adata.n_vars,
        "cells": n_cells,
        "mean_genes_per_cell": round(float(np.diff(adata.X.indptr).mean()), 1),
    }
    for version in ("V2", "V1"):
        vocab = real_vocabulary(version)
        dictionaries = reference_dictionaries(version)
        subset = adata[: n_baseline[version]].copy()
        if version == "V2":  # the V2 mapping dictionary maps symbols itself
            ids = subset.var_names.to_numpy()
        else:  # gc30M maps Ensembl IDs only: give the reference the IDs scgf maps symbols to
            column_tokens = vocab.map_genes(subset.var_names)
            ids = np.where(
                column_tokens >= 0,
                vocab.id_of_token[np.maximum(column_tokens, 0)],
                subset.var_names.to_numpy(),
            )

        def ours(vocab=vocab):
            return scgf.pp.tokenize(adata, model=vocab, inplace=False)

        def baseline(ids=ids, subset=subset, version=version, dictionaries=dictionaries):
            return reference_tokenize(subset, ids, version, dictionaries)

        first = _first_call(ours)
        runs = {"scgf": (ours, n_cells), "baseline": (baseline, len(subset))}
        timing = _interleaved(runs, repeats)
        tokens = ours()
        result[version] = {
            "scgf_first_call_s": first,
            **timing,
            "mean_tokens_per_cell": round(tokens.nnz / n_cells, 1),
            "agreement": _agreement(baseline(), tokens, vocab),
        }
    return result


_FIRST_CALL_CHILD = """
import sys, time
t0 = time.perf_counter()
import anndata as ad, scgf
sys.path.insert(0, {root!r})
from benchmarks._data import real_vocabulary
from scgf.pp import _rank_encoding
import_s = time.perf_counter() - t0
scgf.settings.progress = False
_rank_encoding.KERNEL = {kernel!r}
adata = ad.read_h5ad({data!r})
vocab = real_vocabulary("V2")
times = []
for _ in range(2):
    t0 = time.perf_counter()
    scgf.pp.tokenize(adata, model=vocab, inplace=False)
    times.append(time.perf_counter() - t0)
print(import_s, times[0], times[1], "numba" in sys.modules)
"""


def measure_first_call() -> dict:
    """Cost of the compiled kernel on a small input, each in a fresh process.

    ``pbmc68k_reduced_counts`` (700 cells): the NumPy path, then the compiled kernel with an
    empty numba cache (compiling) and again with the cache it left (loading).
    """
    data = SHARED / "data" / "pbmc68k_reduced_counts.h5ad"
    out = {"input": data.name}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label, kernel in (
            ("numpy", "numpy"),
            ("numba_compile", "numba"),
            ("numba_cached", "numba"),
        ):
            code = _FIRST_CALL_CHILD.format(root=str(ROOT), kernel=kernel, data=str(data))
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            )
            import_s, first, second, numba_imported = result.stdout.split()
            out[label] = {
                "import_s": round(float(import_s), 2),
                "first_call_s": round(float(first), 3),
                "second_call_s": round(float(second), 3),
            }
            if kernel == "numpy":
                out["numpy_path_imports_numba"] = numba_imported == "True"
    return out


_BACKED_CHILD = """
import sys, time, anndata as ad, scgf
sys.path.insert(0, {root!r})
from benchmarks._data import real_vocabulary
from scgf.pp import _rank_encoding
scgf.settings.progress = False
_rank_encoding.KERNEL = {kernel!r}
vocab = real_vocabulary("V2")
adata = ad.read_h5ad({path!r}, backed="r+")
t0 = time.perf_counter()
c0 = time.process_time()
scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id", chunk_size=4096)
elapsed = time.perf_counter() - t0
cpu = time.process_time() - c0
n = adata.n_obs
adata.file.close()
# VmHWM is this process's own peak RSS (ru_maxrss would include the parent's, kept over exec).
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(n, elapsed, cpu, peak_kb)
"""


def measure_backed(n_cells: int, kernel: str = "auto") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.h5ad"
        write_large_backed(path, n_cells)
        size_gb = path.stat().st_size / 1e9
        code = _BACKED_CHILD.format(root=str(ROOT), path=str(path), kernel=kernel)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        n, elapsed, cpu, max_rss_kb = out.stdout.split()
    return {
        "backed_cells": int(n),
        "file_gb": round(size_gb, 2),
        "backed_cells_per_s": round(int(n) / float(elapsed)),
        "backed_cpu_us_per_cell": round(float(cpu) / int(n) * 1e6, 1),
        "backed_peak_rss_gb": round(int(max_rss_kb) / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--baseline-cells", type=int, default=10_000)
    parser.add_argument("--deep-cells", type=int, default=20_000)
    parser.add_argument("--deep-baseline-cells", type=int, default=4096, help="V1")
    parser.add_argument("--deep-baseline-cells-v2", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backed-cells", type=int, default=1_000_000)
    parser.add_argument("--no-first-call", action="store_true")
    parser.add_argument(
        "--kernel",
        choices=["auto", "numba", "numpy"],
        default="auto",
        help="scgf's encoding path in this process (auto: compiled for large inputs)",
    )
    parser.add_argument(
        "--source", type=Path, default=SOURCE, help="real .h5ad to resample (raw counts)"
    )
    args = parser.parse_args()
    scgf.settings.progress = False
    _rank_encoding.KERNEL = args.kernel
    result = {"machine": {"cpus": os.cpu_count(), "numpy": np.__version__}, "kernel": args.kernel}
    if args.cells:
        result["typical"] = measure_typical(
            args.cells, args.baseline_cells, args.source, args.repeats
        )
    if args.deep_cells:
        result["deep"] = measure_deep(
            args.deep_cells,
            {"V1": args.deep_baseline_cells, "V2": args.deep_baseline_cells_v2},
            args.repeats,
        )
    result["in_memory_peak_rss_gb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
    )
    if not args.no_first_call:
        result["first_call"] = measure_first_call()
    if args.backed_cells:
        result["backed"] = measure_backed(args.backed_cells, args.kernel)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
