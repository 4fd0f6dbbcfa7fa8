"""``scgf.tl.predict``: class labels and probabilities from a fine-tuned cell classifier."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np

from .. import _keys, _logging
from .._anndata import rna_modality
from .._settings import settings
from ._common import ensure_tokens, run_chunks

if TYPE_CHECKING:
    import torch

# What ``resolve(model).task`` says about models that have no cell-classification head.
_NOT_A_CELL_CLASSIFIER = {
    "masked_lm": (
        "a pretrained encoder (masked_lm) without a classification head: use scgf.tl.embed "
        "for its embeddings, or fine-tune it first with scgf.tl.finetune(adata, label_key=..., "
        "model=..., output_dir=...) and predict with that folder"
    ),
    "encoder": (
        "a bare encoder (BertModel) without a classification head: use scgf.tl.embed for its "
        "embeddings, or fine-tune it first with scgf.tl.finetune"
    ),
    "gene_classification": (
        "a gene classifier (one class per gene token, not per cell): use "
        "scgf.tl.predict_genes(adata, model=...) for its predictions"
    ),
}
CELL_TASKS = ("cell_classification", "multitask_cell_classification")
_DEFAULT_LABEL = re.compile(r"LABEL_(\d+)")
SINGLE_TASK = "label"  # the task's name when a single-task model does not record its column


def softmax_proba(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities (float32, on the host) of a batch of float32 logits."""
    import torch

    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def default_labels(classes: list[str]) -> bool:
    """Whether ``classes`` are transformers' placeholders ``LABEL_0``, ``LABEL_1``, …"""
    return all(
        (m := _DEFAULT_LABEL.fullmatch(c)) and int(m.group(1)) == i for i, c in enumerate(classes)
    )


def check_cell_classifier(record) -> None:
    """Refuse models without a cell-classification head, saying what they are."""
    if record.task in CELL_TASKS:
        return
    what = _NOT_A_CELL_CLASSIFIER.get(record.task)
    if what is None:
        architectures = (record.config or {}).get("architectures")
        what = (
            f"a model of unknown task (config architectures: {architectures}), not a cell "
            "classifier scgf can read: pass a folder written by scgf.tl.finetune or a "
            "BertForSequenceClassification checkpoint"
        )
    raise ValueError(f"{record.name} is {what}.")


def model_tasks(loaded) -> dict[str, list[str]]:
    """``{task: [class names in logit order]}`` of a loaded cell classifier."""
    config = loaded.model.config
    if loaded.record.task == "multitask_cell_classification":
        return {str(t): [str(c) for c in classes] for t, classes in config.scgf_tasks.items()}
    id2label = config.id2label
    classes = [str(id2label[k]) for k in sorted(id2label, key=int)]
    name = SINGLE_TASK
    folder = loaded.record.folder
    if folder is not None:
        from .._train._saved import read_metadata

        recorded = (read_metadata(folder) or {}).get("tasks") or {}
        if len(recorded) == 1:
            name = str(next(iter(recorded)))
    return {name: classes}


def task_keys(key_added: str, tasks: dict) -> dict[str, tuple[str, str]]:
    """``{task: (obs column, obsm key)}``: ``key_added`` for one task, per task for several."""
    if len(tasks) == 1:
        return {next(iter(tasks)): (key_added, f"{key_added}_proba")}
    return {t: (f"{key_added}_{t}", f"{key_added}_{t}_proba") for t in tasks}


def predict(
    adata: ad.AnnData,
    *,
    model,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "float32",
    quantize: Literal["8bit", "4bit"] | None = None,
    batch_tokens: int | None = None,
    chunk_size: int = 8192,
    tokens_key: str = _keys.TOKENS,
    key_added: str = _keys.PREDICTION,
    restart: bool = False,
    copy: bool = False,
) -> ad.AnnData | None:
    """Predict cell classes with a fine-tuned classifier.

    Every cell goes through the model in input order (length-sorted, token-budgeted batches;
    chunk by chunk from a backed file). Probabilities are the softmax of the model's float32
    logits, so with ``dtype="float32"`` they equal a plain transformers forward of the
    checkpoint.

    Parameters
    ----------
    adata
        An AnnData (or MuData: its ``rna`` modality) of raw counts or tokens. Without tokens
        under ``tokens_key`` the cells are tokenized first with the model's vocabulary (adding
        ``obsm[tokens_key]``); tokens of another vocabulary are refused. A backed AnnData is
        read chunk by chunk; opened ``"r+"``, the results are also written into its file,
        and an interrupted run resumes where it stopped.
    model
        A fine-tuned cell classifier: a folder written by :func:`scgf.tl.finetune` (a LoRA
        adapter folder included), a ``BertForSequenceClassification`` folder or registry name
        (``"Geneformer-V1-10M_CellClassifier_cardiomyopathies_220224"``), a multi-task model,
        or a loaded transformers model.
    device
        ``"cuda"``, ``"mps"``, ``"cpu"``; by default the first available in that order.
    dtype
        Compute precision: ``"float32"`` (default: exact probabilities), or ``"bfloat16"`` /
        ``"float16"`` autocast for speed on a GPU (probabilities then differ slightly).
        ``None`` picks bf16 on CUDA, float32 elsewhere.
    quantize
        ``"8bit"`` or ``"4bit"`` weights through bitsandbytes (CUDA only, ``scgf[quant]``).
    batch_tokens
        Padded tokens per batch (default 65536 on CUDA, 16384 on MPS, 4096 on CPU); on CUDA
        out-of-memory it is halved.
    chunk_size
        Cells read at a time (bounds memory on backed data). On a file backed ``"r+"``,
        progress is saved at every chunk's end and, at batch boundaries, every
        ``scgf.settings.checkpoint_interval`` seconds, in a folder beside the file
        (``<file>.<key_added>.progress``, removed when the run completes).
    tokens_key
        Where :func:`scgf.pp.tokenize` stored the tokens.
    key_added
        ``adata.obs[key_added]``: the predicted class (categorical, categories in the model's
        class order; NaN for cells without tokens); ``adata.obsm[f"{key_added}_proba"]``:
        (n_obs, n_classes) float32 probabilities, columns in the same order (NaN rows for cells
        without tokens); ``adata.uns[key_added]``: ``{"classes": {task: [classes]},
        "params": {...}}``. A multi-task model writes ``obs[f"{key_added}_{task}"]`` and
        ``obsm[f"{key_added}_{task}_proba"]`` for each task.
    restart
        On a backed file holding progress of an interrupted run with other cells, tokens,
        model or parameters (which is refused, naming what differs), discard that progress
        and start again.
    copy
        Return a copy with the predictions instead of modifying ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``.

    Warns
    -----
    UserWarning
        When the model names its classes only ``LABEL_0``, ``LABEL_1``, … (transformers'
        placeholders, e.g. the published cardiomyopathy classifier): the labels are kept as
        they are, since what they mean is not recorded in the checkpoint. When cells have no
        tokens (their prediction is NaN).

    Under ``torchrun --nproc_per_node N`` each process predicts a contiguous block of cells
    and the results are merged in input order on every process (in memory: a backed file is
    not written then; ``scgf predict`` writes the output from process 0). A resumed run gives
    bitwise the same results as an uninterrupted one: batches are planned over whole chunks,
    so it forms the same batches.
    """
    from .._engine import Logits, Runner, load_model, resolve_device, resolve_dtype
    from .._engine._distributed import shard, world
    from .._resume import cells_fingerprint, tokens_fingerprint
    from ..models import resolve
    from ._prediction_store import PredictionStore

    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: the cells read at a time must be positive.")
    data = adata.copy() if copy else adata
    target = rna_modality(data)
    rank, size = world()
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, torch_device)
    check_cell_classifier(resolve(model))
    loaded = load_model(model, device=torch_device, quantize=quantize, head=True)
    tasks = model_tasks(loaded)
    for task, classes in tasks.items():
        if default_labels(classes):
            where = "" if len(tasks) == 1 else f" for task {task!r}"
            _logging.warn(
                f"{loaded.name}: the model names its classes only {', '.join(classes)}{where}; "
                "predictions keep these names, since the classes' meaning is not recorded in "
                "the checkpoint. Map them to cell states with the model's documentation or the "
                "labels it was trained on."
            )
    vocab = loaded.vocab
    if target.n_obs == 0:
        _logging.warn("adata has no cells (n_obs=0): there is nothing to predict.")
    ensure_tokens(target, vocab, tokens_key)
    runner = Runner(loaded, Logits(loaded), dtype=compute_dtype, token_budget=batch_tokens)
    start_time = _logging.info(
        f"predicting {', '.join(tasks)} of {target.n_obs} cells with {loaded.name}"
    )
    params = {
        **loaded.describe(),
        "task": loaded.record.task,
        "vocabulary": vocab.name,
        "dtype": str(compute_dtype).removeprefix("torch."),
        "quantize": quantize or "none",
        "tokens_key": tokens_key,
    }
    tokens = target.obsm[tokens_key]

    def fingerprint() -> dict:  # only computed where progress can be saved
        return {
            "cells": cells_fingerprint(target.obs_names),
            "tokens": tokens_fingerprint(tokens),
            "classes": tasks,
            **params,
        }

    store = PredictionStore.open(
        target, key_added, tasks, params, fingerprint, distributed=size > 1, restart=restart
    )
    task_names = list(store.tasks)
    run_chunks(
        runner,
        tokens,
        store,
        shard(target.n_obs, rank, size),
        chunk_size,
        on_batch=lambda rows, batch: store.add(rows, batch_probabilities(batch.output, task_names)),
        save=store.save,
        desc="predict",
        show=settings.progress and rank == 0,
    )
    n_empty = store.finish()
    if n_empty and rank == 0:
        _logging.warn(
            f"{n_empty} of {target.n_obs} cells have no tokens (no counts on vocabulary genes); "
            f"their prediction and probabilities are NaN."
        )
    written = ", ".join(f"obs[{c!r}], obsm[{p!r}]" for c, p in task_keys(key_added, tasks).values())
    _logging.info(f"    finished: added {written}, uns[{key_added!r}]", time=start_time)
    return data if copy else None


def batch_probabilities(output, tasks: list[str]) -> np.ndarray:
    """The probabilities of a batch, all tasks side by side (in ``tasks`` order): the readout
    gives one logits tensor, or ``{task: logits}`` for a multi-task model."""
    if not isinstance(output, dict):
        return softmax_proba(output)
    return np.concatenate([softmax_proba(output[task]) for task in tasks], axis=1)
