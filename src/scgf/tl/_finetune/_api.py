"""``scgf.tl.finetune``: fine-tune a Geneformer model to classify cells (one or several labels)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from ... import _keys, _logging
from ..._anndata import rna_modality, row_lengths
from ...models import DEFAULT_MODEL
from . import _labels, _splits
from ._output import check_output_dir, finished

Precision = Literal["fp32", "bf16", "fp16"]


def finetune(
    adata: ad.AnnData,
    label_key: str | Sequence[str],
    *,
    output_dir: str | Path,
    model=DEFAULT_MODEL,
    split_key: str | None = None,
    group_key: str | None = None,
    split_sizes: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: int = 0,
    epochs: float = 10,
    learning_rate: float = 5e-5,
    batch_size: int = 12,
    batch_tokens: int | None = None,
    weight_decay: float = 0.001,
    attention_dropout: float | None = None,
    freeze_layers: int = 0,
    class_weights: Literal["balanced"] | Mapping | None = None,
    early_stopping_patience: int | None = None,
    pooling: Literal["cls", "attention"] = "cls",
    task_weights: Sequence[float] | Mapping[str, float] | None = None,
    lora: bool | Mapping = False,
    quantize: Literal["4bit"] | None = None,
    precision: Precision | None = None,
    device: str | None = None,
    n_trials: int = 0,
    search_space: Mapping | Callable | None = None,
    storage: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    training_args: Mapping | None = None,
    callbacks: Sequence | None = None,
    tokens_key: str = _keys.TOKENS,
    key_added: str = _keys.FINETUNE,
    split_key_added: str = _keys.SPLIT,
    pred_key_added: str = _keys.PREDICTION,
    copy: bool = False,
) -> ad.AnnData | None:
    """Fine-tune a Geneformer model to predict cell labels.

    A new classification head is put on the pretrained encoder and the whole model (or its
    unfrozen layers, or LoRA adapters) is trained with ``transformers.Trainer`` on the
    training cells; the epoch with the best validation macro-F1 is kept. The model is saved
    in ``output_dir`` as a standard transformers folder plus ``scgf.json``, and the held-out
    cells are predicted.

    Parameters
    ----------
    adata
        AnnData (or MuData: its ``rna`` modality) with raw counts or tokens. Without tokens
        under ``tokens_key`` the cells are tokenized with the model's vocabulary (adding
        ``obsm[tokens_key]``).
    label_key
        The ``obs`` column of labels; a list of columns trains one model with a shared
        encoder and one head per column (multi-task). Cells with a missing label (NaN) are
        left out of that task (a warning counts them).
    output_dir
        Folder of the fine-tuned model (must be empty or absent, unless ``resume`` or
        ``overwrite``). Checkpoints are written there during training and removed at the end.
    model
        The model to start from: a registry name, a checkpoint folder, a fine-tuned folder or
        a loaded transformers model.
    split_key
        An ``obs`` column holding ``"train"``, ``"validation"``, ``"test"`` (NaN: leave the
        cell out) to use as the split.
    group_key
        An ``obs`` column of groups (e.g. donors) held out whole: no group is in two splits;
        ``split_sizes`` then counts groups.
    split_sizes
        Fractions (train, validation, test) of a stratified split (by the first task's
        label), the reference's (0.8, 0.1, 0.1) by default. A 0 drops that split (without a
        validation split the last epoch is kept).
    random_state
        Seed of the split, the head's initialisation, dropout and batch order: the same
        seed gives the same model.
    epochs, learning_rate, batch_size, weight_decay
        Training length and optimiser settings (the reference's: 10 epochs, 5e-5, 12 cells
        per device, 0.001).
    batch_tokens
        Train on length-grouped batches of at most this many padded tokens (cells × the
        batch's longest cell) instead of ``batch_size`` cells: many short cells or a few
        long ones per batch, so little padding and about the same memory at every step (a
        cell longer than the budget is a batch of its own). ``batch_size`` then sets only
        the evaluation batches. The order depends on ``random_state`` and the epoch only
        (``resume`` gives the same weights). The learning rate still applies per optimizer
        step, but a step averages the loss over a varying number of cells (each cell of a
        small batch of long cells weighs more) and an epoch has as many steps as batches:
        ``batch_tokens`` ≈ ``batch_size`` × the mean cell length keeps about the steps per
        epoch of ``batch_size``; a larger budget gives fewer, larger steps (raise the
        learning rate or the epochs to match). Step counts (``max_steps``, ``warmup_steps``,
        ``save_steps`` in ``training_args``) count these batches. Under ``torchrun`` the
        budget is per process. ``None``: ``batch_size`` cells per batch.
    attention_dropout
        Dropout on the attention weights while training; ``None`` keeps the model's
        (Geneformer's: 0.02). On a CPU the dropout runs as the fused attention kernel plus a
        sparse correction (PyTorch's own would take the unfused path); ``0.0`` saves the
        correction's remaining cost but regularises less (check the validation score on
        your task). The saved model's config holds the value used.
    freeze_layers
        Freeze the embeddings and this many of the lowest encoder layers.
    class_weights
        ``"balanced"`` weighs the cross-entropy by ``n / (n_classes * count)`` of the
        training cells (for imbalanced labels); a dict ``{class: weight}`` (multi-task:
        ``{task: {class: weight} | "balanced"}``) gives them; ``None``: unweighted.
    early_stopping_patience
        Stop after this many evaluations without a better validation macro-F1 (``None``:
        train all epochs; the best epoch is kept either way).
    pooling
        Multi-task only: the cell vector the heads read, ``"cls"`` or ``"attention"``.
    task_weights
        Multi-task only: loss weight per task (list in ``label_key`` order or dict).
    lora
        Train LoRA adapters instead of the encoder: ``True`` (rank 64, alpha 128, dropout
        0.1, the reference's settings) or a dict of ``r``, ``alpha``, ``dropout``,
        ``target_modules``. The folder then holds the adapter; scgf's tools load it.
    quantize
        ``"4bit"``: QLoRA, the backbone in 4-bit NF4 (bitsandbytes, CUDA only) with LoRA.
    precision
        ``"bf16"``/``"fp16"`` mixed precision or ``"fp32"``; default bf16 on CUDA GPUs that
        support it, else fp32.
    device
        ``"cpu"`` to train on the CPU although a GPU is visible; by default the first visible
        GPU (under ``torchrun``, each process's own), else the CPU.
    n_trials
        Run this many optuna trials of a hyperparameter search first (maximising validation
        macro-F1, pruning bad trials), then train the best setting into ``output_dir``. The
        study is kept in ``output_dir/search.db``; ``resume=True`` adds trials to it.
    search_space
        The search space: ``{argument: (low, high) | ("log", low, high) | [choices]}`` over
        ``TrainingArguments`` fields, or a function ``trial -> dict``; default the
        reference's space (spec §6.4).
    storage
        An optuna storage URL for the study instead of ``output_dir/search.db`` (e.g. a
        database shared by several machines).
    resume
        Continue an interrupted training from its last checkpoint in ``output_dir`` (the same
        data and settings are required; the final weights equal an uninterrupted run's).
    overwrite
        Replace a previous run's ``output_dir``.
    training_args
        Any ``transformers.TrainingArguments`` overrides.
    callbacks
        Extra ``transformers.TrainerCallback`` objects.
    tokens_key
        Where the tokens are (or go).
    key_added
        ``adata.uns[key_added]``: ``params``, ``tasks``, ``metrics`` (per task and split:
        accuracy, macro-F1, confusion matrix, ROC for two classes), ``history`` (one row per
        logged step), ``search`` (trial table) and ``output_dir``.
    split_key_added
        ``adata.obs[split_key_added]``: the split of each cell (NaN: not used).
    pred_key_added
        ``adata.obs[pred_key_added]`` (multi-task: ``f"{pred_key_added}_{task}"``): the
        predicted class of the validation and test cells (NaN elsewhere).
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``.
    """
    from ..._engine._device import resolve_device
    from ..._train import config_overrides
    from ..._train._lora import quantized_backbone_kwargs
    from ..._train._trainer import check_batch_tokens
    from ...get import check_token_vocabulary
    from ...models import resolve
    from ._model import lora_settings, n_layers_of

    data = adata.copy() if copy else adata
    target = rna_modality(data)
    keys = _labels.label_keys_of(label_key)
    multitask = len(keys) > 1
    sizes = _splits.check_sizes(split_sizes)
    if pooling not in ("cls", "attention"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'attention'.")
    if (pooling != "cls" or task_weights is not None) and not multitask:
        raise ValueError(
            "pooling= and task_weights= apply to multi-task fine-tuning (a list of label "
            "columns as label_key); a single-task classifier reads the <cls> token."
        )
    if split_key is not None and group_key is not None:
        raise ValueError("Pass split_key= or group_key=, not both.")
    config_overrides(attention_dropout=attention_dropout)  # a bad rate fails here, not later
    if batch_tokens is not None:
        batch_tokens = check_batch_tokens(batch_tokens)
    for key in (split_key, group_key):
        if key is not None and key not in target.obs:
            raise KeyError(f"adata.obs has no column {key!r}.")
    state = check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    if state == "resume" and n_trials == 0 and finished(output_dir):
        raise FileExistsError(
            f"The training in {output_dir} is finished (its model is saved there); load it "
            "with scgf.tl.predict(adata, model=...), or pass overwrite=True to train again."
        )
    lora_kwargs = lora_settings(lora, quantize)
    train_device = resolve_device(device)
    if train_device.index not in (None, 0) and device is not None:
        raise ValueError(
            f"device={device!r}: training uses the first visible GPU (or each torchrun "
            "process's own); choose it with CUDA_VISIBLE_DEVICES instead."
        )
    quantize_kwargs = quantized_backbone_kwargs(quantize, train_device)
    precision = _check_precision(precision, train_device)
    stratify = split_key is None and group_key is None
    needed = 1 + (sizes[1] > 0) + (sizes[2] > 0)
    codes, tasks = _labels.encode_labels(
        target.obs, keys, min_per_class=needed if stratify and not multitask else 1
    )
    record = resolve(model)
    vocab = record.vocabulary
    n_layers = n_layers_of(record)
    if freeze_layers < 0 or (n_layers is not None and freeze_layers > n_layers):
        raise ValueError(f"freeze_layers={freeze_layers}; the model has {n_layers} layers.")
    if tokens_key in target.obsm:
        check_token_vocabulary(target, vocab, tokens_key)
    tokens, token_uns = _tokens(target, vocab, tokens_key)

    lengths = row_lengths(tokens)
    usable = (codes >= 0).any(axis=1) & (lengths > 0)
    n_empty = int(((codes >= 0).any(axis=1) & (lengths == 0)).sum())
    if n_empty:
        _logging.warn(f"{n_empty} labelled cells have no tokens and are left out.")
    if split_key is not None:
        split = _splits.from_column(target.obs[split_key], usable)
    elif group_key is not None:
        split = _splits.grouped(target.obs[group_key], usable, sizes, random_state)
    else:
        split = _splits.stratified(codes[:, 0], usable, sizes, random_state)

    params = {
        **record.describe(),
        "label_key": keys,
        "split_key": split_key,
        "group_key": group_key,
        "split_sizes": list(sizes),
        "random_state": random_state,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "weight_decay": weight_decay,
        "attention_dropout": None if attention_dropout is None else float(attention_dropout),
        "freeze_layers": freeze_layers,
        "class_weights": class_weights,
        "early_stopping_patience": early_stopping_patience,
        "pooling": pooling,
        "task_weights": task_weights,
        "lora": lora_kwargs,
        "quantize": quantize,
        "precision": precision,
        "n_trials": n_trials,
        "training_args": dict(training_args or {}),
        "tokens_key": tokens_key,
    }
    from ._run import Job

    job = Job(
        record=record,
        model=model,
        vocab=vocab,
        tokens=tokens,
        token_params=dict(token_uns.get("params", {})),
        obs_names=target.obs_names,
        codes=codes,
        tasks=tasks,
        split=split,
        multitask=multitask,
        output_dir=Path(output_dir),
        state=state,
        params=params,
        lora=lora_kwargs,
        quantize_kwargs=quantize_kwargs,
        device=device,
        callbacks=list(callbacks or []),
    )
    start = _logging.info(
        f"fine-tuning {record.name} on {int((split == 0).sum())} cells to predict "
        f"{', '.join(keys)} ({', '.join(f'{len(c)} classes' for c in tasks.values())})"
    )
    result = job.run(
        n_trials=n_trials,
        search_space=search_space,
        storage=storage,
        overwrite=overwrite,
        resume=resume,
    )

    # Success: write the results (nothing above changed adata).
    if tokens_key not in target.obsm:
        target.obsm[tokens_key] = tokens
        target.uns[tokens_key] = token_uns
    target.obs[split_key_added] = _splits.as_categorical(split)
    held_out = (split == 1) | (split == 2)
    for t, (task, classes) in enumerate(tasks.items()):
        column = pred_key_added if not multitask else f"{pred_key_added}_{task}"
        predicted = np.full(target.n_obs, -1)
        rows = result.predicted_rows[t]
        predicted[rows] = np.where(held_out[rows], result.predicted[t], -1)
        target.obs[column] = pd.Categorical.from_codes(predicted, categories=classes)
    target.uns[key_added] = {
        "params": _uns_safe(params),
        "tasks": {t: list(c) for t, c in tasks.items()},
        "metrics": result.metrics,
        "history": result.history,
        "output_dir": str(output_dir),
    }
    if result.search is not None:
        target.uns[key_added]["search"] = result.search
    summary = ", ".join(
        f"{task} test macro-F1 {m['test']['macro_f1']:.3f}"
        for task, m in result.metrics.items()
        if m.get("test") and m["test"]["macro_f1"] is not None
    )
    _logging.info(
        f"    finished: model in {output_dir}; added obs[{split_key_added!r}], predictions, "
        f"uns[{key_added!r}]" + (f" ({summary})" if summary else ""),
        time=start,
    )
    return data if copy else None


def _check_precision(precision, device) -> str:
    import torch

    if precision is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision={precision!r}; use 'fp32', 'bf16' or 'fp16'.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA GPU; use 'bf16' or 'fp32' here.")
    return precision


def _tokens(target: ad.AnnData, vocab, tokens_key: str):
    """The token matrix and its ``uns`` record, tokenizing on a shell that shares ``X`` when
    there are none (so ``adata`` is only changed once training succeeded)."""
    if tokens_key in target.obsm:
        return target.obsm[tokens_key], dict(target.uns.get(tokens_key, {}))
    from ...pp import tokenize

    if target.isbacked:
        tokenize(target, model=vocab, key_added=tokens_key)
        return target.obsm[tokens_key], dict(target.uns[tokens_key])
    shell = ad.AnnData(
        X=target.X, obs=target.obs, var=target.var, layers=dict(target.layers.items())
    )
    tokenize(shell, model=vocab, key_added=tokens_key)
    return shell.obsm[tokens_key], dict(shell.uns[tokens_key])


def _uns_safe(value):
    """Parameters as values ``write_h5ad`` stores (dicts, lists, strings, numbers, None)."""
    if isinstance(value, Mapping):
        return {str(k): _uns_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_uns_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str | np.generic):
        return value
    return str(value)
