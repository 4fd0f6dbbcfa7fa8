"""Pretraining on a corpus far larger than the process's memory: peak RSS and setup time.

Run: ``python -m benchmarks.pretrain_memory`` (``--cells``, ``--steps``, ``--dtype`` to size it;
``--keep`` keeps the generated corpus, ``--corpus FOLDER`` reuses one; ``--in-memory-arm`` adds
the same run on the corpus loaded whole, for contrast; ``--quick`` for a smoke run).

**Corpus.** A Hugging Face dataset saved with ``save_to_disk``, in the published
Genecorpus-30M format (``input_ids`` and ``length`` columns): ``--cells`` cells (default
1.5 million) drawn with replacement from the real cells of the shared full-gene files
(``pbmc_sorted_zheng2017_3100``, ``pbmc_sorted_zheng2017_scminer_3500``,
``pbmc_ifnb_kang2018_2000``, ``immune_celltypist_559``, ``tcell_wu2020_200``) tokenized with the
real V1 dictionaries, so token lists and lengths follow real cells (median about 530 tokens,
up to 2,048). Token ids are stored as ``--dtype`` (int32 by default; the reference's
tokenizer writes V1 ids as int16 and V2 ids as int32). It is written in ``--workdir`` (``/tmp``)
and removed at the end unless ``--keep``.

**Run.** :func:`scgf.tl.pretrain` from scratch with a tiny model (2 layers, 64 wide, the V1
vocabulary and context) on the corpus folder for ``--steps`` optimizer steps of 12 cells,
500 cells held out and evaluated at the end, in a fresh process. Reported: that process's
peak resident memory (``VmHWM``: anonymous memory plus the pages of memory-mapped files it
touched), the peaks of its anonymous and file-backed parts (sampled every 20 ms), its resident
memory after importing torch, transformers, datasets and scgf (the floor of any such
process), and the seconds from the call to the first training step (opening the corpus,
reading its lengths, the held-out split, the length-grouped order of all cells, the model).
The same run on a small corpus of ``--small-cells`` (20,000) cells generated the same way
gives what the model, its batches and the libraries take on their own: the difference is what
the corpus's size costs. With ``--in-memory-arm`` the same run is repeated on the corpus
loaded whole (``load_from_disk(..., keep_in_memory=True)``), which is what a corpus larger
than memory cannot afford.

File-backed pages are the corpus's pages that the process has touched and that are still in
the page cache: the kernel counts them as resident but drops them under memory pressure (they
are clean copies of the file), so they do not limit the corpus size; a long run touches more
of them (with the development machine's 8 MB read-ahead, each cell read at random mapped
about 1 MB). The anonymous memory is what the process itself holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULL_GENE_FILES = (  # the shared files with (nearly) every gene measured: realistic lengths
    "pbmc_sorted_zheng2017_3100.h5ad",
    "pbmc_sorted_zheng2017_scminer_3500.h5ad",
    "pbmc_ifnb_kang2018_2000.h5ad",
    "immune_celltypist_559.h5ad",
    "tcell_wu2020_200.h5ad",
)
HELD_OUT_CELLS = 500
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    hidden_act="relu",
    max_position_embeddings=2048,
    # without attention dropout PyTorch's fused CPU attention runs and never holds the
    # 12 x heads x 2,048^2 attention weights of the longest batch (~3 GB with dropout on a
    # 2-layer model): the model's activations then stay small next to the corpus
    attention_probs_dropout_prob=0.0,
)


# --- the corpus -----------------------------------------------------------------------------


def real_v1_cells() -> list[np.ndarray]:
    """V1 token lists of the real cells of the shared full-gene files."""
    import anndata as ad

    import scgf
    from benchmarks._data import SHARED, real_vocabulary

    vocab = real_vocabulary("V1")
    cells = []
    for name in FULL_GENE_FILES:
        adata = ad.read_h5ad(SHARED / "data" / name)
        adata = adata[:, adata.var["ensembl_id"].notna().to_numpy()].copy()
        scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id")
        cells.extend(scgf.get.tokens(adata))
    return [c for c in cells if len(c)]


def generate_corpus(
    folder: Path, n_cells: int, dtype: str, seed: int = 0, shard_cells: int = 100_000
) -> dict:
    """Write ``n_cells`` cells (real V1 cells drawn with replacement) as a Hugging Face
    dataset in ``folder`` (``save_to_disk``), a shard of ``shard_cells`` in memory at a time."""
    import pyarrow as pa

    import datasets

    start = time.perf_counter()
    cells = real_v1_cells()
    real_lengths = np.array([len(c) for c in cells])
    flat = np.concatenate(cells).astype(dtype)
    real_starts = np.concatenate([[0], np.cumsum(real_lengths)[:-1]])
    schema = pa.schema(
        [("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))), ("length", pa.int64())]
    )
    shards = folder.with_name(folder.name + ".shards")
    shards.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, n_tokens = [], 0
    for lo in range(0, n_cells, shard_cells):
        picks = rng.integers(0, len(cells), min(shard_cells, n_cells - lo))
        lengths = real_lengths[picks]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        # positions of the picked cells' tokens in ``flat``, cell after cell
        gather = np.repeat(real_starts[picks] - offsets[:-1], lengths) + np.arange(offsets[-1])
        ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat[gather]))
        path = shards / f"shard-{lo // shard_cells:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_batch(pa.record_batch([ids, pa.array(lengths.astype(np.int64))], schema))
        paths.append(path)
        n_tokens += int(offsets[-1])
    parts = [datasets.Dataset.from_file(str(p)) for p in paths]
    datasets.concatenate_datasets(parts).save_to_disk(str(folder), max_shard_size="500MB")
    del parts
    shutil.rmtree(shards)
    return {
        "cells": n_cells,
        "tokens": n_tokens,
        "token_dtype": dtype,
        "real_cells_drawn_from": len(cells),
        "real_length_median": float(np.median(real_lengths)),
        "real_length_p95": float(np.percentile(real_lengths, 95)),
        "generation_seconds": round(time.perf_counter() - start, 1),
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- the measured process ---------------------------------------------------------------------


def _status() -> dict[str, int]:
    """This process's memory counters from ``/proc/self/status``, in kB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


class PeakSampler(threading.Thread):
    """Samples the anonymous and file-backed resident memory every ``interval`` seconds and
    keeps their peaks (``VmHWM`` gives the peak of their sum only)."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, {"RssAnon": 0, "RssFile": 0}, True

    def run(self) -> None:
        while self.running:
            now = _status()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now[key])
            time.sleep(self.interval)


def child(corpus: Path, steps: int, in_memory: bool, threads: int) -> dict:
    """One pretraining run on ``corpus`` in this (fresh) process; its memory and timings."""
    import torch
    import transformers
    from transformers import TrainerCallback

    import datasets  # the floor includes every library the run imports
    import scgf
    from benchmarks._data import real_vocabulary

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    scgf.settings.progress = False
    scgf.settings.verbosity = "warning"
    floor_kb = _status()["VmRSS"]
    sampler = PeakSampler()
    sampler.start()

    class FirstStep(TrainerCallback):
        def __init__(self):
            self.at = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.at is None:
                self.at = time.perf_counter()

    first = FirstStep()
    vocab = real_vocabulary("V1")
    start = time.perf_counter()
    source = corpus
    if in_memory:
        source = datasets.load_from_disk(str(corpus), keep_in_memory=True)
    n_cells = datasets.load_from_disk(str(corpus)).num_rows
    output = corpus.with_name(corpus.name + (".model-in-memory" if in_memory else ".model"))
    result = scgf.tl.pretrain(
        source,
        vocab=vocab,
        architecture=TINY,
        output_dir=output,
        max_steps=steps,
        batch_size=12,
        learning_rate=1e-3,
        warmup_steps=0.1,
        eval_fraction=HELD_OUT_CELLS / n_cells,
        logging_steps=max(1, steps // 5),
        device="cpu",
        overwrite=True,
        callbacks=[first],
        seed=0,
    )
    end = time.perf_counter()
    sampler.running = False
    sampler.join()
    shutil.rmtree(output, ignore_errors=True)
    status = _status()
    training = end - first.at
    return {
        "in_memory": in_memory,
        "steps": result["global_step"],
        "train_cells": result["n_cells"]["train"],
        "cells_read": result["global_step"] * 12 + result["n_cells"]["eval"],
        "held_out_cells": result["n_cells"]["eval"],
        "peak_rss_gib": round(status["VmHWM"] / 2**20, 3),
        "peak_anonymous_gib": round(sampler.peak["RssAnon"] / 2**20, 3),
        "peak_file_backed_gib": round(sampler.peak["RssFile"] / 2**20, 3),
        "floor_rss_after_imports_gib": round(floor_kb / 2**20, 3),
        "seconds_to_first_step": round(first.at - start, 1),
        "seconds_training_and_evaluation": round(training, 1),
        "train_loss": result["train_loss"],
        "eval_loss": result["eval_loss"],
    }


def run_child(corpus: Path, steps: int, in_memory: bool, threads: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.pretrain_memory",
        "--child",
        "--corpus",
        str(corpus),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    if in_memory:
        command.append("--in-memory")
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the measured run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=1_500_000)
    parser.add_argument("--dtype", default="int32", choices=["int16", "int32", "int64"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus")
    parser.add_argument("--small-cells", type=int, default=20_000, help="0: no small run")
    parser.add_argument("--in-memory-arm", action="store_true")
    parser.add_argument("--quick", action="store_true", help="50,000 cells, 10 steps")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.corpus, args.steps, args.in_memory, args.threads)))
        return
    if args.quick:
        args.cells, args.steps, args.small_cells = 50_000, 5, 5_000
    report: dict = {}
    generated = args.corpus is None
    corpus = args.corpus or args.workdir / f"scgf_pretrain_memory_{os.getpid()}" / "corpus"
    try:
        if generated:
            report["corpus"] = generate_corpus(corpus, args.cells, args.dtype)
        report.setdefault("corpus", {})["folder"] = str(corpus)
        report["corpus"]["bytes_on_disk"] = folder_bytes(corpus)
        report["corpus"]["gib_on_disk"] = round(folder_bytes(corpus) / 2**30, 3)
        report["memory_mapped"] = run_child(corpus, args.steps, False, args.threads)
        if generated and args.small_cells:
            # the same run on a small corpus from the same cells: what the model, its batches
            # and the libraries take; the large corpus should add little to it
            small = corpus.with_name("small_corpus")
            report["small_corpus"] = generate_corpus(small, args.small_cells, args.dtype)
            report["small_corpus"]["gib_on_disk"] = round(folder_bytes(small) / 2**30, 3)
            report["small_corpus_run"] = run_child(small, args.steps, False, args.threads)
        if args.in_memory_arm:
            report["in_memory"] = run_child(corpus, args.steps, True, args.threads)
    finally:
        if generated and not args.keep:
            shutil.rmtree(corpus.parent, ignore_errors=True)
    report["environment"] = {"threads": args.threads, "cpus": os.cpu_count()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
