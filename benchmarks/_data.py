"""Benchmark inputs: many cells resampled from real counts by binomial thinning; a training
epoch timer."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scgf.vocab import Vocabulary

SHARED = Path(os.environ.get("SCGF_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DICTS = SHARED / "reference" / "geneformer_dicts"
SOURCE = SHARED / "data" / "pbmc_sorted_zheng2017_3100.h5ad"
# The full 32,786-gene 10x matrix (Cell Ranger GRCh38 gene set), gene symbols as var_names.
DEEP_SOURCE = SHARED / "data" / "immune_celltypist_559.h5ad"


def real_vocabulary(version: str = "V2") -> Vocabulary:
    """The published vocabulary, read from the shared copies of the dictionaries."""
    tag, name = ("gc95M", "gc104M") if version == "V2" else ("gc30M", "gc30M")
    return Vocabulary.from_files(
        DICTS / f"token_dictionary_{tag}.pkl",
        DICTS / f"gene_median_dictionary_{tag}.pkl",
        gene_mapping=DICTS / f"ensembl_mapping_dict_{tag}.pkl",
        gene_names=DICTS / f"gene_name_id_dict_{tag}.pkl",
        name=name,
    )


def reference_dictionaries(version: str = "V2") -> tuple[dict, dict, dict]:
    """The reference tokenizer's dictionaries as it holds them: token ids, medians, and the
    ID mapping filtered to genes in the token dictionary."""
    tag = "gc95M" if version == "V2" else "gc30M"

    def load(stem: str) -> dict:
        with open(DICTS / f"{stem}_{tag}.pkl", "rb") as handle:
            return pickle.load(handle)

    tokens = load("token_dictionary")
    mapping = {k: v for k, v in load("ensembl_mapping_dict").items() if v in tokens}
    return tokens, load("gene_median_dictionary"), mapping


def add_dictionaries(folder: Path, version: str = "V2") -> None:
    """Copy the published dictionaries into a checkpoint folder, so it works offline."""
    tag = "gc95M" if version == "V2" else "gc30M"
    for stem in (
        "token_dictionary",
        "gene_median_dictionary",
        "ensembl_mapping_dict",
        "gene_name_id_dict",
    ):
        (Path(folder) / f"{stem}_{tag}.pkl").write_bytes((DICTS / f"{stem}_{tag}.pkl").read_bytes())


def thinned_cells(
    n_cells: int,
    seed: int = 0,
    source: Path = SOURCE,
    keep: float | tuple[float, float] = (0.3, 1.0),
) -> ad.AnnData:
    """``n_cells`` real cells drawn with replacement, each count thinned by a random depth.

    Every new cell is a real cell whose counts are binomially subsampled with a keep
    probability drawn uniformly in ``keep`` (default [0.3, 1]), or fixed when ``keep`` is a
    number: a standard way to simulate shallower sequencing. ``var`` keeps the source's
    ``var_names`` and its ``ensembl_id`` column.
    """
    real = ad.read_h5ad(source)
    counts = real.X.tocsr()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, real.n_obs, n_cells)
    if isinstance(keep, tuple):
        keep = rng.uniform(*keep, n_cells)
    else:
        keep = np.full(n_cells, float(keep))
    rows = counts[picks]
    per_entry = np.repeat(keep, np.diff(rows.indptr))
    thinned = rng.binomial(rows.data.astype(np.int64), per_entry).astype(np.float32)
    out = sp.csr_matrix((thinned, rows.indices, rows.indptr), shape=rows.shape)
    out.eliminate_zeros()
    obs = pd.DataFrame(
        {"n_counts": np.asarray(out.sum(axis=1)).ravel().astype(np.float32)},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(out, obs=obs, var=real.var[["ensembl_id"]].copy())


def deep_cells(n_cells: int, seed: int = 0, keep: float = 0.8) -> ad.AnnData:
    """Deeply sequenced cells with the full 10x gene set, named by gene symbol.

    Cells of :data:`DEEP_SOURCE` (559 immune cells, 32,786 genes, symbols as ``var_names``)
    thinned with one keep probability, 0.8 by default: about 1,630 non-zero genes per cell.
    Tokenizing by ``var_names`` maps symbols and, for V2, sums the columns that map to one
    Ensembl ID.
    """
    return thinned_cells(n_cells, seed=seed, source=DEEP_SOURCE, keep=keep)


def write_large_backed(path: Path, n_cells: int, block: int = 100_000) -> None:
    """Write an ``.h5ad`` of ``n_cells`` thinned cells block by block (bounded memory)."""
    first = thinned_cells(block, seed=0)
    obs_parts = [first.obs]
    first.write_h5ad(path)
    import h5py

    with h5py.File(path, "r+") as handle:
        matrix = ad.io.sparse_dataset(handle["X"])
        for i, start in enumerate(range(block, n_cells, block), start=1):
            part = thinned_cells(min(block, n_cells - start), seed=i)
            part.obs_names = [f"cell{start + j}" for j in range(part.n_obs)]
            matrix.append(part.X)
            obs_parts.append(part.obs)
        del handle["obs"]
        ad.io.write_elem(handle, "obs", pd.concat(obs_parts))


def training_timer():
    """A Trainer callback summing the time spent in training epochs (not evaluation)."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = 0.0, None

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.started is not None:
                self.seconds += time.perf_counter() - self.started
                self.started = None

    return EpochTimer()
