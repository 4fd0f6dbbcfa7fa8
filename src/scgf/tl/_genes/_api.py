"""``scgf.tl.finetune_genes`` and ``scgf.tl.predict_genes``: the AnnData shells."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from ... import _keys, _logging
from ..._anndata import as_csr, rna_modality
from ...models import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch

FINETUNE_KEY = _keys.FINETUNE_GENES
PREDICT_KEY = _keys.GENE_PRED
METRICS = ("macro_f1", "accuracy", "roc_auc")
LORA_DEFAULTS = {"r": 64, "alpha": 128, "dropout": 0.1}


def finetune_genes(
    adata: ad.AnnData,
    gene_labels: Mapping[str, Sequence[str]] | None = None,
    *,
    var_key: str | None = None,
    model=DEFAULT_MODEL,
    output_dir: str | Path,
    n_folds: int = 5,
    max_folds: int | None = None,
    balance: bool = False,
    final_model: bool = True,
    random_state: int = 0,
    epochs: float = 1,
    learning_rate: float = 5e-5,
    batch_size: int = 12,
    freeze_layers: int = 0,
    lora: bool | dict = False,
    precision: str | None = None,
    attention_dropout: float | None = None,
    device: str | torch.device | None = None,
    batch_tokens: int | None = None,
    callbacks: Sequence | None = None,
    n_trials: int = 0,
    search_space: Mapping | Callable | None = None,
    storage: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    training_args: dict[str, Any] | None = None,
    tokens_key: str = _keys.TOKENS,
    key_added: str = FINETUNE_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Fine-tune a gene classifier and cross-validate it over genes.

    Geneformer's gene classifier (spec §6.2–6.3): the cells that express any labelled gene
    are the training examples, each labelled gene's token carries its class and every other
    position ``-100``; a ``BertForTokenClassification`` initialised from ``model`` learns to
    tell the classes from the genes' context. Genes, not cells, are cross-validated: in each
    of ``n_folds`` stratified folds a fresh model trains on the other folds' genes only (the
    held-out genes' tokens are ``-100`` in training), and the held-out genes, split into
    validation and test, are predicted. A gene's prediction is its per-token class
    probabilities averaged over the cells that express it, so metrics are **per gene**
    (see :doc:`/gene_classification` for how they differ from the reference's per-token ones).

    Parameters
    ----------
    adata
        Raw counts or tokens (tokenized with ``model``'s vocabulary first when
        ``obsm[tokens_key]`` is absent).
    gene_labels
        ``{class: [genes]}`` with gene symbols or Ensembl IDs, mapped through the model's
        vocabulary; genes outside it are left out with a warning. At least two classes, each
        with at least ``n_folds`` genes that the cells express.
    var_key
        Instead of ``gene_labels``: a ``var`` column of classes (NaN = unlabelled).
    model
        The pretrained model: registry name, folder or loaded transformers model.
    output_dir
        Where the models go: ``output_dir/fold_k/`` per fold and, with ``final_model``, the
        model trained on all labelled genes in ``output_dir`` itself. Each is a standard
        transformers token-classification folder plus ``scgf.json``.
    n_folds
        Folds of the cross-validation over genes (the reference's 5 by default).
    max_folds
        Train and evaluate only the first ``max_folds`` folds (the reference's
        ``num_crossval_splits=1`` runs one); the folds are still drawn over ``n_folds``.
    balance
        Binary tasks: drop training genes of the over-represented class until the classes'
        token occurrences are within 0.8–1.25× (the reference's ``gene_balance``).
    final_model
        Also train on every labelled gene and save that model in ``output_dir``.
    random_state
        Seed of the folds, the validation/test split, balancing and training.
    epochs, learning_rate, batch_size
        Training length, peak learning rate (linear decay) and cells per batch; batches are
        grouped by cell length.
    freeze_layers
        Encoder layers (from the bottom) kept frozen.
    lora
        ``True`` (the reference's r=64, alpha=128, dropout 0.1) or a dict of
        :func:`scgf._train._lora.apply_lora` settings: train LoRA adapters, merged into the
        saved model.
    precision
        ``"bf16"``/``"fp16"`` mixed-precision training (autocast) or ``"fp32"``; default bf16 on
        CUDA GPUs that support it, else fp32. Evaluation runs in float32.
    attention_dropout
        Attention-probability dropout while training; ``None`` keeps the model's own (0.02
        for Geneformer, as the reference trains). On a CPU the dropout runs as the fused
        attention kernel plus a sparse correction; ``0.0`` saves the correction's remaining
        cost (no difference on CUDA) but regularises less. The saved config holds the value
        used.
    device
        Where to train; by default the first of CUDA, MPS, CPU.
    batch_tokens
        Padded tokens per evaluation batch.
    callbacks
        Extra ``transformers.TrainerCallback`` objects for every training (not the search's
        trials).
    n_trials
        First run this many optuna trials of a hyperparameter search on the **first fold**:
        each trial trains on that fold's training genes and is scored by the per-gene
        macro-F1 of its validation genes (pruning bad trials); every fold and the final
        model are then trained with the best trial's setting. The study is kept in
        ``output_dir/search.db``; ``resume=True`` adds trials to it (``n_trials=0`` with
        ``resume=True`` reuses its best setting without new trials).
    search_space
        The search space: ``{argument: (low, high) | ("log", low, high) | [choices]}`` over
        ``TrainingArguments`` fields, or a function ``trial -> dict``; default the
        reference's (spec §6.4), as :func:`~scgf.tl.finetune`'s.
    storage
        An optuna storage URL for the study instead of ``output_dir/search.db`` (e.g. a
        database shared by several machines); with ``n_trials=0``, the stored study's best
        setting is used.
    resume
        Continue an interrupted run in ``output_dir``: finished folds are read back, a fold in
        progress resumes from its last checkpoint (same data, model and parameters only).
        After a search whose best setting changed, folds trained with the old one are
        trained again.
    overwrite
        Replace what ``output_dir`` holds.
    training_args
        Any other ``transformers.TrainingArguments`` (override the above).
    tokens_key
        Where the tokens are (or go).
    key_added
        ``adata.uns[key_added]``: ``params``, ``classes``, ``folds`` (``{"0": test metrics
        with ``validation`` and ``token_level`` entries, ...}``), ``metrics`` (mean and sd
        over folds), ``genes`` (each labelled gene's held-out prediction), ``search``
        (optuna's trial table, with a search; the best setting is in
        ``params["search"]["best"]`` and ``params["training_arguments"]``) and
        ``output_dir``.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy with ``copy=True``.
    """
    from ..._engine import resolve_device
    from ..._resume import cells_fingerprint
    from ...models import resolve
    from ._folds import gene_folds
    from ._labels import check_class_sizes
    from ._training import TrainingPlan

    target = rna_modality(adata)
    vocab = resolve(model, weights=False).vocabulary  # labels are checked before any download
    labels = _gene_labels(target, gene_labels, var_key, vocab, tokens_key)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds}; cross-validation needs at least 2 folds.")
    if max_folds is not None and not 1 <= max_folds <= n_folds:
        raise ValueError(f"max_folds={max_folds}; use 1 to n_folds={n_folds} (or None: all).")
    check_class_sizes(labels, n_folds)
    _check_search(n_trials, search_space)
    output = Path(output_dir)
    _check_output_dir(output, resume=resume, overwrite=overwrite)
    tokens, token_uns = _tokens(target, vocab, tokens_key)
    labels = _expressed(labels, tokens, vocab)
    check_class_sizes(labels, n_folds)
    record = resolve(model, vocabulary=vocab)
    _check_training(record, freeze_layers, balance, labels)
    from .._finetune._api import _check_precision

    torch_device = resolve_device(device)
    plan = TrainingPlan(
        record=record,
        classes=labels.classes,
        device=torch_device,
        precision=_check_precision(precision, torch_device),
        attention_dropout=attention_dropout,
        callbacks=list(callbacks or []),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        freeze_layers=freeze_layers,
        lora=_lora_settings(lora),
        random_state=random_state,
        training_args=_reference_defaults(record, training_args),
    )
    folds = gene_folds(labels.labels, n_folds, random_state=random_state)[:max_folds]
    params = {
        **record.describe(),
        "n_folds": n_folds,
        "max_folds": max_folds,
        "balance": balance,
        "final_model": final_model,
        "random_state": random_state,
        "freeze_layers": freeze_layers,
        "lora": plan.lora is not None,
        "precision": plan.precision,
        "tokens_key": tokens_key,
        "var_key": var_key,
        "training_arguments": plan.arguments(),  # the search's best setting added below
    }
    if overwrite and output.exists():
        shutil.rmtree(output)
    start = _logging.info(
        f"fine-tuning a gene classifier on {len(labels.tokens)} genes "
        f"({', '.join(f'{c}: {n}' for c, n in labels.counts().items())}), {n_folds} folds"
    )
    token_info = token_uns or {"params": dict(target.uns[tokens_key]["params"])}
    context = _Context(plan, tokens, labels, output, params, token_info, batch_tokens, resume)
    context.cells = cells_fingerprint(target.obs_names)
    search = context.search(
        folds[0], balance, n_trials=n_trials, search_space=search_space, storage=storage
    )
    results = [context.run_fold(fold, balance) for fold in folds]
    summary = _summary(results)
    if final_model:
        context.run_final(balance, summary)
    data = adata.copy() if copy else adata
    out = rna_modality(data)
    if token_uns is not None:  # tokenized here: the tokens are kept, like every tool does
        out.obsm[tokens_key] = tokens
        out.uns[tokens_key] = token_uns
    out.uns[key_added] = {
        "params": {k: v for k, v in params.items() if v is not None},
        "classes": list(labels.classes),
        "folds": {str(r["fold"]): r["metrics"] for r in results},
        "metrics": summary,
        "genes": _gene_table(labels, folds, results),
        "output_dir": str(output),
    }
    if search is not None:
        out.uns[key_added]["search"] = search
    text = ", ".join(f"{m} {s['mean']:.3f} ± {s['sd']:.3f}" for m, s in summary.items())
    _logging.info(f"    finished: test genes {text}; added uns[{key_added!r}]", time=start)
    return data if copy else None


class _Context:
    """The state every fold's training shares."""

    def __init__(self, plan, tokens, labels, output, params, token_uns, batch_tokens, resume):
        from ..._resume import tokens_fingerprint

        self.plan, self.tokens, self.labels, self.output = plan, tokens, labels, output
        self.params, self.batch_tokens, self.resume = params, batch_tokens, resume
        self.vocab_size = _vocab_size(plan)
        self.occurrences = np.bincount(
            tokens.data.astype(np.int64), minlength=self.vocab_size
        ).astype(np.int64)
        self.tokenization = dict(token_uns["params"])
        self.tokens_fingerprint = tokens_fingerprint(tokens)
        self.cells: str | None = None  # the cells' fingerprint, set by the caller
        self.searched = False  # trainings use a search's best setting

    @property
    def base_fingerprint(self) -> dict:
        """What every training is computed from: cells, tokens and parameters (among them the
        training arguments, a search's best setting included)."""
        skip = ("final_model", "max_folds", "search")
        return {
            "tokens": self.tokens_fingerprint,
            "cells": self.cells,
            **{k: v for k, v in self.params.items() if k not in skip},
        }

    def search(
        self, fold, balance: bool, *, n_trials: int, search_space, storage: str | None
    ) -> pd.DataFrame | None:
        """Search on ``fold`` (``n_trials`` > 0) or read a stored study (``n_trials=0``:
        ``storage``, or ``output_dir/search.db`` when resuming), then train everything with
        the best setting; returns the trial table (``None`` without a search)."""
        from .._finetune._output import SEARCH_DIR
        from .._finetune._search import search, stored_search
        from ._search import GeneSearch

        target = GeneSearch(
            plan=self.plan,
            tokens=self.tokens,
            labels=self.labels,
            fold=fold,
            train_index=self._train_genes(fold.train, balance),
            vocab_size=self.vocab_size,
            output_dir=self.output,
            base_fingerprint=self.base_fingerprint,
            batch_tokens=self.batch_tokens,
        )
        if n_trials:
            target.check_validation()  # before anything is written
            self.output.mkdir(parents=True, exist_ok=True)
            best, table = search(
                target, n_trials=n_trials, search_space=search_space, storage=storage
            )
            shutil.rmtree(self.output / SEARCH_DIR, ignore_errors=True)  # the trials' folders
        else:
            found = stored_search(target, storage=storage) if self.resume or storage else None
            if found is None:
                return None
            best, table = found
        self.plan.training_args = {**self.plan.training_args, **best}
        self.params["training_arguments"] = self.plan.arguments()
        self.params["search"] = {"fold": fold.index, "best": best}
        if table is not None:  # None on the other processes under torchrun
            self.params["search"]["n_trials"] = len(table)
        self.searched = True
        return table

    def _train_genes(self, index: np.ndarray, balance: bool) -> np.ndarray:
        from ._folds import balance_binary

        if not balance:
            return index
        if len(self.labels.classes) != 2:
            raise ValueError(
                f"balance=True applies to two classes; this task has {len(self.labels.classes)}."
            )
        tokens = self.labels.tokens[index]
        return balance_binary(
            index,
            self.labels.labels[index],
            self.occurrences[tokens],
            random_state=self.plan.random_state,
        )

    def fingerprint(self, name: str, train_index: np.ndarray) -> dict:
        """What a training is computed from: the cells, tokens, parameters, its genes."""
        genes = self.labels.tokens[train_index]
        labels = self.labels.labels[train_index]
        return {
            **self.base_fingerprint,
            "model_trained": name,
            "genes": [[int(t), int(c)] for t, c in zip(genes, labels, strict=True)],
        }

    def _fit(self, folder: Path, train_index: np.ndarray, fingerprint: dict):
        from ._training import label_array, train

        tokens = self.labels.tokens[train_index]
        token_labels = label_array(tokens, self.labels.labels[train_index], self.vocab_size)
        return train(
            self.plan,
            self.tokens,
            token_labels,
            folder,
            fingerprint=fingerprint,
            resume=self.resume,
            restart_if_changed=self.searched,
        )

    def _saved(self, folder: Path, fingerprint: dict) -> dict | None:
        """The metadata of a model this run finished earlier (``resume``), checked to come
        from the same data and parameters. After a search (whose study was checked to come
        from the same data and settings), a model trained with another setting is trained
        again instead."""
        from ..._resume import ResumeMismatchError, check_same
        from ..._train._saved import read_metadata

        saved = read_metadata(folder) if self.resume else None
        if saved is None or "fingerprint" not in saved:
            return None
        try:
            check_same(
                saved["fingerprint"],
                fingerprint,
                str(folder),
                "fine-tune with the same data, model and parameters to resume, or pass "
                "overwrite=True or another output_dir.",
            )
        except ResumeMismatchError:
            if not self.searched:
                raise
            _logging.info(f"    {folder.name}: trained with another setting; training again")
            return None
        return saved

    def _metadata(self, metrics: dict, genes: dict) -> dict:
        vocab = self.plan.vocab
        lora = None
        if self.plan.lora is not None:
            lora = {**self.plan.lora, "merged": True}
        return {
            "task": "gene_classification",
            "tasks": {"gene_class": list(self.plan.classes)},
            "base_model": self.params.get("model", str(self.plan.record.name)),
            "vocabulary": {"name": vocab.name, "fingerprint": vocab.fingerprint},
            "tokenization": self.tokenization,
            "metrics": metrics,
            "training_arguments": self.plan.arguments(),
            "lora": lora,
            "search": self.params.get("search"),
            "genes": genes,
        }

    def run_fold(self, fold, balance: bool) -> dict:
        from ._training import save

        folder = self.output / f"fold_{fold.index}"
        train_index = self._train_genes(fold.train, balance)
        fingerprint = self.fingerprint(f"fold_{fold.index}", train_index)
        saved = self._saved(folder, fingerprint)
        if saved is not None:
            _logging.info(f"    fold {fold.index}: done earlier, read from {folder}")
            return saved["fold"]
        _logging.info(f"    fold {fold.index}: training")
        model = self._fit(folder, train_index, fingerprint)
        result = self._evaluate(model, fold, train_index)
        names = self.labels.names
        genes = {
            split: [str(n) for n in names[index]]
            for split, index in (
                ("train", train_index),
                ("validation", fold.validation),
                ("test", fold.test),
            )
        }
        metadata = self._metadata({"test": result["metrics"]}, genes)
        save(model, self.plan, folder, {**metadata, "fold": result, "fingerprint": fingerprint})
        return result

    def _evaluate(self, model, fold, train_index) -> dict:
        from ..._train._metrics import classification_metrics
        from ._training import cells_with, probabilities

        held = np.concatenate([fold.validation, fold.test])
        held_tokens = self.labels.tokens[held]
        rows = cells_with(self.tokens, held_tokens, self.vocab_size)
        acc = probabilities(
            model,
            self.plan,
            self.tokens[rows],
            keep_tokens=self.labels.tokens[fold.test],
            token_budget=self.batch_tokens,
        )
        proba, n_cells = acc.mean()
        classes = self.plan.classes

        def gene_level(index):
            tokens = self.labels.tokens[index]
            return classification_metrics(self.labels.labels[index], proba[tokens], classes)

        test = gene_level(fold.test)
        occ_tokens, occ_proba = acc.occurrences()
        test["validation"] = gene_level(fold.validation)
        test["token_level"] = classification_metrics(
            self.labels.class_of(occ_tokens), occ_proba, classes
        )
        test["n_genes"] = {
            "train": len(train_index),
            "validation": len(fold.validation),
            "test": len(fold.test),
        }
        return {
            "fold": fold.index,
            "metrics": test,
            "held_out": [int(i) for i in held],
            "proba": proba[held_tokens].tolist(),
            "n_cells": n_cells[held_tokens].tolist(),
        }

    def run_final(self, balance: bool, summary: dict) -> None:
        from ._training import save

        train_index = self._train_genes(np.arange(len(self.labels.tokens)), balance)
        fingerprint = self.fingerprint("final", train_index)
        if self._saved(self.output, fingerprint) is not None:
            _logging.info(f"    final model: done earlier, in {self.output}")
            return
        _logging.info(f"    final model: training on all {len(train_index)} genes")
        model = self._fit(self.output, train_index, fingerprint)
        genes = {"train": [str(n) for n in self.labels.names[train_index]]}
        metadata = self._metadata({"cross_validation": summary}, genes)
        save(model, self.plan, self.output, {**metadata, "fingerprint": fingerprint})


def _summary(results: list[dict]) -> dict:
    """Mean and sample sd over folds of the test genes' metrics (folds without a value, e.g.
    AUC of a fold with one class among its test genes, left out)."""
    out = {}
    for metric in METRICS:
        values = [r["metrics"][metric] for r in results if r["metrics"][metric] is not None]
        if values:
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[metric] = {"mean": float(np.mean(values)), "sd": sd, "n_folds": len(values)}
    return out


def _gene_table(labels, folds, results) -> pd.DataFrame:
    """One row per labelled gene: its class, the fold and split where it was held out, and
    the held-out model's averaged probabilities."""
    n = len(labels.tokens)
    fold_of = np.full(n, -1, dtype=np.int64)
    split = np.full(n, "", dtype=object)
    proba = np.full((n, len(labels.classes)), np.nan)
    n_cells = np.zeros(n, dtype=np.int64)
    for fold, result in zip(folds, results, strict=True):
        held = np.asarray(result["held_out"], dtype=np.int64)
        fold_of[held] = fold.index
        split[fold.validation], split[fold.test] = "validation", "test"
        proba[held] = np.asarray(result["proba"], dtype=np.float64)
        n_cells[held] = result["n_cells"]
    classes = list(labels.classes)
    held_out = ~np.isnan(proba).any(axis=1)  # genes of folds not run (max_folds): NaN
    predicted = np.where(held_out, np.nan_to_num(proba, nan=-1).argmax(axis=1), -1)
    table = pd.DataFrame(
        {
            "gene": labels.names.astype(str),
            "token": labels.tokens,
            "label": pd.Categorical.from_codes(labels.labels, classes),
            "fold": fold_of,
            "split": pd.Categorical(split, categories=["validation", "test"]),
            "predicted": pd.Categorical.from_codes(predicted, classes),
            "n_cells": n_cells,
        }
    )
    for i, c in enumerate(classes):
        table[f"proba_{c}"] = proba[:, i].astype(np.float32)
    return table


def _gene_labels(target, gene_labels, var_key, vocab, tokens_key):
    from ._labels import labels_from_dict, labels_from_var

    if (gene_labels is None) == (var_key is None):
        raise ValueError(
            "Pass gene_labels={class: [genes]} or var_key= naming a var column of classes "
            "(one of them)."
        )
    if gene_labels is not None:
        return labels_from_dict(gene_labels, vocab)
    return labels_from_var(target.var, var_key, _gene_ids(target, tokens_key), vocab)


def _gene_ids(target, tokens_key) -> np.ndarray:
    """The identifiers the tokens were made from: the tokenizer's ``gene_key`` column, else
    the var names."""
    params = target.uns.get(tokens_key, {}).get("params", {})
    gene_key = params.get("gene_key") if tokens_key in target.obsm else None
    return np.asarray(target.var[gene_key] if gene_key else target.var_names, dtype=object)


def _check_search(n_trials, search_space) -> None:
    """Search options that would fail later, refused before anything is written."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int | np.integer) or n_trials < 0:
        raise ValueError(f"n_trials={n_trials!r}; pass a whole number of trials ≥ 0.")
    if n_trials:
        from ..._optional import import_optional
        from .._finetune._search import hp_space

        import_optional("optuna", feature="Hyperparameter search (n_trials=)")
        hp_space(search_space)


def _check_output_dir(output: Path, *, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError("Pass resume=True or overwrite=True, not both.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir={str(output)!r} is a file; give a folder.")
    if output.is_dir() and any(output.iterdir()) and not (resume or overwrite):
        raise ValueError(
            f"output_dir={str(output)!r} is not empty. Pass resume=True to continue the run "
            "saved there, overwrite=True to replace it, or another output_dir."
        )


def _tokens(target, vocab, tokens_key):
    """The token matrix (CSR) and, when the cells were tokenized here, the ``uns`` entry to
    store with it. Tokenizing runs on a shallow stand-in, so ``adata`` is untouched until the
    call succeeds."""
    from ...get import check_token_vocabulary
    from ...pp import tokenize

    if tokens_key in target.obsm:
        check_token_vocabulary(target, vocab, tokens_key)
        return as_csr(target.obsm[tokens_key]), None
    stand_in = ad.AnnData(X=target.X, obs=target.obs, var=target.var, layers=dict(target.layers))
    tokenize(stand_in, model=vocab, key_added=tokens_key)
    return as_csr(stand_in.obsm[tokens_key]), dict(stand_in.uns[tokens_key])


def _expressed(labels, tokens, vocab):
    """The labelled genes that some cell expresses (a gene no cell holds can be neither
    trained nor evaluated); others are left out with a warning."""
    from ._labels import GeneLabels, _examples

    present = np.zeros(int(max(tokens.data.max(initial=0), labels.tokens.max())) + 1, bool)
    present[tokens.data.astype(np.int64)] = True
    expressed = present[labels.tokens]
    if not expressed.any():
        raise ValueError(
            f"No cell expresses any of the {len(labels.tokens)} labelled genes (among "
            f"{tokens.shape[0]} cells): there is nothing to train on. Check that the labels "
            "and the data are the same species and gene naming, or use cells that express them."
        )
    if not expressed.all():
        missing = labels.names[~expressed]
        _logging.warn(
            f"{len(missing)} of {len(labels.tokens)} labelled genes are expressed in no cell and "
            f"are left out ({_examples(missing)})."
        )
    return GeneLabels(
        labels.classes,
        labels.tokens[expressed],
        labels.labels[expressed],
        labels.names[expressed],
    )


def _lora_settings(lora) -> dict | None:
    if lora is False or lora is None:
        return None
    if lora is True:
        return dict(LORA_DEFAULTS)
    if isinstance(lora, Mapping):
        return {**LORA_DEFAULTS, **lora}
    raise TypeError(f"lora={lora!r}; pass True, False or a dict of LoRA settings.")


def _check_training(record, freeze_layers: int, balance: bool, labels) -> None:
    """Settings that would fail in the first training, refused before anything is written."""
    layers = (record.config or {}).get("num_hidden_layers")
    if layers is not None and not 0 <= freeze_layers <= layers:
        raise ValueError(f"freeze_layers={freeze_layers}; the model has {layers} encoder layers.")
    if balance and len(labels.classes) != 2:
        raise ValueError(
            f"balance=True applies to two classes; this task has {len(labels.classes)}."
        )


def _reference_defaults(record, training_args: dict | None) -> dict:
    """The reference's defaults that depend on the model, under the user's arguments: 6-layer
    models warm up for 500 steps (spec §6.3)."""
    layers = (record.config or {}).get("num_hidden_layers")
    defaults = {"warmup_steps": 500} if layers == 6 else {}
    return {**defaults, **(training_args or {})}


def _vocab_size(plan) -> int:
    config = plan.record.config or {}
    size = config.get("vocab_size")
    return int(size) if size else len(plan.vocab.id_of_token)


def predict_genes(
    adata: ad.AnnData,
    *,
    model,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_tokens: int | None = None,
    tokens_key: str = _keys.TOKENS,
    key_added: str = PREDICT_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Predict the class of every gene that the cells express, with a gene classifier.

    Each cell runs through the model once; a gene's class probabilities are its per-token
    probabilities averaged over the cells where it occurs (the way
    :func:`finetune_genes` evaluates held-out genes). Batches are reduced as they come, so
    memory holds (vocabulary × classes) sums, never (cells × genes × classes).

    Parameters
    ----------
    adata
        Raw counts or tokens (tokenized with the model's vocabulary when ``obsm[tokens_key]``
        is absent).
    model
        A gene classifier: the ``output_dir`` (or a ``fold_k`` folder) of
        :func:`finetune_genes`, another ``BertForTokenClassification`` folder, or a loaded one.
    device, dtype, batch_tokens
        Where and in which precision to run (default float32, exact), and padded tokens per
        batch.
    tokens_key
        Where the tokens are (or go).
    key_added
        ``var[key_added]`` (categorical: the most probable class; NaN for genes no cell
        expresses or outside the vocabulary), ``var[f"{key_added}_n_cells"]`` (cells that
        express the gene), ``varm[f"{key_added}_proba"]`` (genes × classes, float32) and
        ``uns[key_added]`` (``params``, ``classes``). :func:`scgf.get.gene_predictions_df`
        gives them as a table.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy with ``copy=True``.
    """
    from ..._engine import Logits, Runner, load_model, resolve_device, resolve_dtype
    from .._common import var_tokens
    from ._aggregate import GeneProbabilities

    target = rna_modality(adata)
    torch_device = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, torch_device) if dtype is not None else None
    loaded = load_model(model, device=torch_device, head=True)
    record = loaded.record
    if record.task != "gene_classification":
        raise ValueError(
            f"{loaded.name} is a {record.task or 'model of unknown task'} model, not a gene "
            "classifier (BertForTokenClassification); train one with scgf.tl.finetune_genes, "
            "or use scgf.tl.predict for a cell classifier."
        )
    vocab = loaded.vocab
    tokens, token_uns = _tokens(target, vocab, tokens_key)
    classes = list(record.labels)
    start = _logging.info(f"predicting gene classes with {loaded.name} ({tokens.shape[0]} cells)")
    import torch

    runner = Runner(
        loaded,
        Logits(loaded),
        dtype=compute_dtype or torch.float32,
        token_budget=batch_tokens,
    )
    acc = GeneProbabilities(
        int(loaded.model.config.vocab_size),
        len(classes),
        special_tokens=vocab.special_tokens,
        device=torch_device,
    )
    for batch in runner.run(tokens):
        acc.add(batch.output, batch.input_ids, batch.lengths)
    proba, n_cells = acc.mean()

    data = adata.copy() if copy else adata
    out = rna_modality(data)
    if token_uns is not None:
        out.obsm[tokens_key] = tokens
        out.uns[tokens_key] = token_uns
    per_var = var_tokens(out, vocab, tokens_key)
    var_proba = proba[per_var].astype(np.float32)
    var_n = n_cells[per_var]
    predicted = np.where(var_n > 0, np.nan_to_num(var_proba, nan=-1).argmax(1), -1)
    out.var[key_added] = pd.Categorical.from_codes(predicted, classes)
    out.var[f"{key_added}_n_cells"] = var_n.astype(np.int64)
    out.varm[f"{key_added}_proba"] = var_proba
    out.uns[key_added] = {
        "params": {
            **loaded.describe(),
            "dtype": str(compute_dtype or torch.float32).removeprefix("torch."),
            "tokens_key": tokens_key,
        },
        "classes": classes,
    }
    n_predicted = int((var_n > 0).sum())
    _logging.info(
        f"    finished: {n_predicted} of {out.n_vars} genes predicted; added "
        f"var[{key_added!r}], var['{key_added}_n_cells'], varm['{key_added}_proba']",
        time=start,
    )
    return data if copy else None
