"""The pretraining corpus: cells' token sequences from AnnData, ``.h5ad`` files or a Hugging
Face dataset, read with bounded memory.

Every source becomes a dataset of ``{"input_ids": LongTensor}`` items with the precomputed
``lengths`` the length-grouped sampler needs:

- an in-memory AnnData: its ``obsm`` tokens, or tokens made now (the AnnData is not changed);
- an ``.h5ad`` file with tokens: the token matrix read through h5py one cell at a time (the
  file is opened read-only; anndata's backed mode would load ``obsm`` whole);
- an ``.h5ad`` file of counts: tokenized chunk by chunk into a memory-mapped Arrow file
  (written with pyarrow, read with ``datasets``) in a work folder;
- a Hugging Face dataset (a ``datasets.Dataset`` or a folder saved with ``save_to_disk``)
  with ``input_ids`` and, optionally, ``length`` columns: Genecorpus-30M's format, memory-mapped.

Memory is bounded by one chunk of cells (tokenizing) and the cells of a batch (training);
the lengths (one integer per cell) are the only per-cell array held.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from ... import _logging
from ..._anndata import rna_modality
from ..._resume import cells_fingerprint, tokens_fingerprint
from ..._settings import settings
from ...vocab import Vocabulary
from ._errors import EmptyCorpusError

ARROW_FINGERPRINT = b"scgf_vocabulary_fingerprint"
SAMPLE_CELLS = 256  # cells of a foreign dataset checked when it is opened (ids, layout)


@dataclass
class Corpus:
    """A pretraining corpus: a dataset of token sequences and what it was made from."""

    dataset: torch.utils.data.Dataset
    sources: list[dict] = field(default_factory=list)

    @property
    def lengths(self) -> np.ndarray:
        return self.dataset.lengths

    @property
    def n_cells(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> list[dict]:
        """What the corpus is, for resuming (file identities and token hashes)."""
        return [{k: v for k, v in s.items() if k != "label"} for s in self.sources]


class ArrowTokens(torch.utils.data.Dataset):
    """Cells of a memory-mapped Hugging Face dataset with an ``input_ids`` column.

    Only the lengths are read up front (the ``length`` column, else the Arrow list offsets);
    a cell's ids are read when it is asked for, and checked then to be ids of the
    vocabulary (``vocab_size``, with ``label`` naming the source in the error).
    """

    def __init__(self, dataset, vocab_size: int | None = None, label: str = "the dataset"):
        import pyarrow.compute as pc

        self.vocab_size, self.label = vocab_size, label
        self.dataset = dataset.with_format("numpy", columns=["input_ids"])
        table = dataset.data
        # int32 and no index when every row is a cell: the per-cell state stays a few bytes
        # a cell (Genecorpus-30M has 27 million)
        if "length" in dataset.column_names:
            lengths = np.asarray(table.column("length").to_numpy(), dtype=np.int32)
        else:
            lengths = np.asarray(pc.list_value_length(table.column("input_ids")), dtype=np.int32)
        empty = lengths <= 0
        self.index = np.flatnonzero(~empty) if empty.any() else None
        self.lengths = lengths if self.index is None else lengths[self.index]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = int(item if self.index is None else self.index[item])
        ids = np.asarray(self.dataset[row]["input_ids"], dtype=np.int64)
        # a sample of cells was checked when the corpus was opened (reading every cell then
        # would read the whole corpus); each cell is checked as it is read
        if (
            self.vocab_size is not None
            and len(ids)
            and (ids.max() >= self.vocab_size or ids.min() < 0)
        ):
            bad = int(ids[(ids >= self.vocab_size) | (ids < 0)][0])
            raise ValueError(
                f"{self.label}: cell {row} holds token id {bad}, outside the vocabulary (ids "
                f"0-{self.vocab_size - 1}): its tokens were made with another vocabulary. "
                "Use a model of that vocabulary, or tokenize the cells again."
            )
        return {"input_ids": torch.from_numpy(ids)}


class ConcatTokens(torch.utils.data.ConcatDataset):
    """Several token datasets as one, with their lengths concatenated."""

    def __init__(self, parts):
        super().__init__(parts)
        self.lengths = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, int)


class SubsetTokens(torch.utils.data.Dataset):
    """The cells ``indices`` of a token dataset, with their lengths; each item also carries
    its ``index`` in the whole dataset (what its masks are seeded with)."""

    def __init__(self, dataset, indices: np.ndarray):
        dtype = np.int32 if len(dataset) < 2**31 else np.int64
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=dtype)
        self.lengths = np.asarray(dataset.lengths)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        index = int(self.indices[item])
        return {**self.dataset[index], "index": index}


def open_corpus(
    corpus,
    vocab: Vocabulary,
    *,
    tokens_key: str,
    layer: str | None,
    gene_key: str | None,
    chunk_size: int,
    work_dir: Path,
) -> Corpus:
    """Open every source of ``corpus`` as token sequences of ``vocab``.

    Tokens stored in a source must have been made with ``vocab`` (compared by content
    fingerprint, as every tool does); sources without tokens are tokenized with it.
    """
    from ..._train import TokenDataset

    sources = list(corpus) if isinstance(corpus, list | tuple) else [corpus]
    if not sources:
        raise EmptyCorpusError("The corpus is an empty list: pass AnnData objects or files.")
    parts, described = [], []
    for i, source in enumerate(sources):
        if isinstance(source, ad.AnnData) or type(source).__name__ == "MuData":
            part, info = _anndata_part(source, vocab, tokens_key, layer, gene_key, i)
        elif _is_hf_dataset(source):
            part, info = _arrow_part(source, vocab, f"dataset {i}")
            info["fingerprint"] = getattr(source, "_fingerprint", None)
        else:
            path = Path(source)
            if path.is_dir():
                part, info = _hf_folder_part(path, vocab)
            elif path.is_file():
                part, info = _h5ad_part(
                    path, vocab, tokens_key, layer, gene_key, chunk_size, work_dir, i
                )
            else:
                raise FileNotFoundError(
                    f"Corpus entry {source!s} does not exist: give .h5ad files, AnnData objects, "
                    "or Hugging Face datasets (folders saved with save_to_disk)."
                )
        if isinstance(part, list):  # token matrices: one TokenDataset each
            part = TokenDataset(part)
        parts.append(part)
        described.append(info)
    dataset = parts[0] if len(parts) == 1 else ConcatTokens(parts)
    if len(dataset) == 0:
        raise EmptyCorpusError(
            f"The corpus ({', '.join(d['label'] for d in described)}) holds no cell with "
            "vocabulary genes: nothing to pretrain on. Check that the files hold cells and "
            "that their genes are in the vocabulary."
        )
    return Corpus(dataset, described)


def split_corpus(corpus: Corpus, eval_fraction: float, seed: int):
    """``(train, eval)`` datasets: a random ``eval_fraction`` of the cells held out (``eval``
    is ``None`` when the fraction is 0)."""
    n = corpus.n_cells
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction}; use a fraction in [0, 1).")
    n_eval = round(n * eval_fraction)
    if eval_fraction > 0 and n_eval == 0:
        n_eval = 1
    if n_eval >= n:
        raise ValueError(
            f"eval_fraction={eval_fraction} of {n} cells leaves none to train on; lower it."
        )
    if n_eval == 0:
        return SubsetTokens(corpus.dataset, np.arange(n)), None
    order = np.random.default_rng(seed).permutation(n)
    held = order[:n_eval]
    held = held[np.argsort(np.asarray(corpus.lengths)[held], kind="stable")]  # less padding
    train = np.sort(order[n_eval:])
    return SubsetTokens(corpus.dataset, train), SubsetTokens(corpus.dataset, held)


# --- sources --------------------------------------------------------------------------------


def _anndata_part(adata, vocab, tokens_key, layer, gene_key, i):
    from ...get import check_token_vocabulary
    from ...pp import tokenize

    target = rna_modality(adata)
    label = f"AnnData {i} ({target.n_obs} cells)"
    if tokens_key in target.obsm:
        check_token_vocabulary(target, vocab, tokens_key)
        matrix = target.obsm[tokens_key]
    elif target.isbacked:
        raise ValueError(
            f"{label} is backed and has no obsm[{tokens_key!r}] tokens; pass its file path "
            "instead (it is then tokenized chunk by chunk), or tokenize it first."
        )
    else:  # tokens made now, the AnnData left as it is
        matrix = tokenize(target, model=vocab, layer=layer, gene_key=gene_key, inplace=False)
    info = {
        "kind": "anndata",
        "label": label,
        "cells": cells_fingerprint(target.obs_names),
        "tokens": tokens_fingerprint(matrix),
    }
    return [matrix], info


def _h5ad_part(path, vocab, tokens_key, layer, gene_key, chunk_size, work_dir, i):
    import h5py

    stat = path.stat()
    info = {
        "kind": "h5ad",
        "label": str(path),
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    handle = h5py.File(path, "r")
    if "obsm" in handle and tokens_key in handle["obsm"]:
        _check_file_tokens(handle, path, vocab, tokens_key)
        return [ad.io.sparse_dataset(handle["obsm"][tokens_key])], info
    handle.close()
    arrow = _tokenize_to_arrow(path, vocab, layer, gene_key, chunk_size, work_dir, i, info)
    part, _ = _arrow_part(_load_arrow(arrow), vocab, str(path))
    info["tokenized"] = arrow.name
    return part, info


def _check_file_tokens(handle, path: Path, vocab: Vocabulary, key: str) -> None:
    """The vocabulary check of :func:`scgf.get.check_token_vocabulary`, on a file's ``uns``
    read without loading the file."""
    from ...get import check_token_vocabulary

    uns = {}
    if "uns" in handle and key in handle["uns"]:
        uns[key] = ad.io.read_elem(handle["uns"][key])
    try:
        check_token_vocabulary(ad.AnnData(uns=uns), vocab, key)
    except (KeyError, ValueError) as err:
        text = err.args[0] if err.args else str(err)
        raise type(err)(f"{path}: {text}") from None


def _tokenize_to_arrow(path, vocab, layer, gene_key, chunk_size, work_dir, i, info) -> Path:
    """Tokenize the counts of ``path`` chunk by chunk into an Arrow file in ``work_dir``
    (kept for later runs with the same file and vocabulary: resuming does not tokenize
    again)."""
    import pyarrow as pa

    key = hashlib.sha256(
        repr(
            (info["path"], info["size"], info["mtime_ns"], vocab.fingerprint, layer, gene_key)
        ).encode()
    ).hexdigest()[:16]
    target = work_dir / f"{i:04d}-{path.stem}-{key}.arrow"
    if target.exists():
        return target
    from ...pp import tokenize

    work_dir.mkdir(parents=True, exist_ok=True)
    backed = ad.read_h5ad(path, backed="r")
    start = _logging.info(f"tokenizing {backed.n_obs} cells of {path} into {target.parent}")
    schema = pa.schema(
        [("input_ids", pa.list_(pa.int32())), ("length", pa.int32())],
        metadata={ARROW_FINGERPRINT: vocab.fingerprint.encode()},
    )
    partial = target.with_name(target.name + ".partial")
    quiet = settings.verbosity, settings.progress
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            settings.verbosity, settings.progress = "warning", False
            for lo in range(0, backed.n_obs, chunk_size):
                chunk = backed[lo : min(lo + chunk_size, backed.n_obs)].to_memory()
                tokens = tokenize(
                    chunk, model=vocab, layer=layer, gene_key=gene_key, inplace=False
                ).tocsr()
                tokens.sort_indices()
                lengths = np.diff(tokens.indptr).astype(np.int32)
                offsets = pa.array(tokens.indptr.astype(np.int32))
                values = pa.array(tokens.data.astype(np.int32))
                batch = pa.record_batch(
                    [pa.ListArray.from_arrays(offsets, values), pa.array(lengths)], schema=schema
                )
                writer.write_batch(batch)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        if isinstance(err, ValueError) and str(path) not in str(err):
            err.add_note(f"(in {path})")
        raise
    finally:
        settings.verbosity, settings.progress = quiet
        backed.file.close()
    os.replace(partial, target)
    _logging.info("    finished", time=start)
    return target


def _load_arrow(path: Path):
    from ..._optional import import_optional

    datasets = import_optional("datasets", feature="Pretraining on files without tokens")
    return datasets.Dataset.from_file(str(path))


def _is_hf_dataset(source) -> bool:
    return type(source).__name__ == "Dataset" and type(source).__module__.startswith("datasets")


def _hf_folder_part(path: Path, vocab):
    from ..._optional import import_optional

    if not ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        raise ValueError(
            f"{path} is a folder but not a Hugging Face dataset saved with save_to_disk (no "
            "state.json): give .h5ad files or such a dataset."
        )
    datasets = import_optional("datasets", feature="Pretraining on a Hugging Face dataset")
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(
            f"{path} holds several splits ({', '.join(dataset)}); pass one, e.g. "
            f"{path}/{next(iter(dataset))}."
        )
    part, info = _arrow_part(dataset, vocab, str(path))
    info.update(path=str(path.resolve()), fingerprint=dataset._fingerprint)
    return part, info


def _arrow_part(dataset, vocab: Vocabulary, label: str):
    """A Hugging Face dataset of token ids, checked against ``vocab``."""
    if "input_ids" not in dataset.column_names:
        raise ValueError(
            f"{label} has columns {dataset.column_names} but no 'input_ids': a pretraining "
            "dataset holds each cell's token ids in 'input_ids' (and optionally 'length')."
        )
    _check_arrow_tokens(dataset, vocab, label)
    part = ArrowTokens(dataset, len(vocab.id_of_token), label)
    return part, {"kind": "dataset", "label": label, "n_cells": len(part)}


def _check_arrow_tokens(dataset, vocab: Vocabulary, label: str) -> None:
    """Refuse token ids of another vocabulary: by the fingerprint scgf writes, else by the ids'
    range and the ``<cls>``/``<eos>`` layout of a sample of cells spread over the dataset
    (every cell's range is checked again as it is read, by :class:`ArrowTokens`: scanning
    all ids here would read a corpus of any size whole before the first step)."""
    metadata = dataset.data.schema.metadata or {}
    if ARROW_FINGERPRINT in metadata:
        made = metadata[ARROW_FINGERPRINT].decode()
        if made != vocab.fingerprint:
            raise ValueError(
                f"{label} holds tokens of another vocabulary (fingerprint {made}) than the "
                f"model's {vocab.name} (fingerprint {vocab.fingerprint}); tokenize the cells "
                "with this model's vocabulary."
            )
        return
    if len(dataset) == 0:
        return
    n = min(len(dataset), SAMPLE_CELLS)
    rows = np.unique(np.linspace(0, len(dataset) - 1, n).astype(int))
    sample = dataset.select_columns(["input_ids"]).with_format("numpy").select(rows)
    cells = [np.asarray(c, dtype=np.int64) for c in sample["input_ids"]]
    ids = np.concatenate(cells) if cells else np.zeros(0, np.int64)
    if len(ids) == 0:
        return
    top, size = int(ids.max()), len(vocab.id_of_token)
    if top >= size or int(ids.min()) < 0:
        raise ValueError(
            f"{label} holds token id {top}, outside the {vocab.name} vocabulary (ids 0-"
            f"{size - 1}): its tokens were made with another vocabulary (Genecorpus-30M holds "
            "V1 gc30M tokens). Use a model of that vocabulary, or tokenize the cells again."
        )
    cells = [c for c in cells if len(c) >= 2]
    if not cells:
        return
    cls_id, eos_id = (vocab.cls_id, vocab.eos_id) if vocab.special_tokens else (2, 3)
    wrapped = np.mean([c[0] == cls_id and c[-1] == eos_id for c in cells])
    if vocab.special_tokens and wrapped < 1:
        raise ValueError(
            f"{label}: cells are not written <cls> … <eos> as the {vocab.name} (V2) vocabulary "
            "writes them; these look like V1 tokens. Use a V1 model or tokenize again."
        )
    if not vocab.special_tokens and wrapped == 1:
        raise ValueError(
            f"{label}: every sampled cell starts with token 2 and ends with token 3, as V2 "
            f"<cls> … <eos> cells do, but the {vocab.name} (V1) vocabulary has no special "
            "tokens; these look like V2 tokens. Use a V2 model or tokenize again."
        )


def describe_sources(sources: Sequence[dict]) -> list[str]:
    """The sources' labels, for logs and metadata."""
    return [s["label"] for s in sources]
