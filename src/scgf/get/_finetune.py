"""Tidy access to fine-tuning results and to predictions of fine-tuned classifiers."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._anndata import rna_modality

FINETUNE_KEY = "scgf_finetune"  # uns key of scgf.tl.finetune's results
SCALAR_METRICS = ("n", "accuracy", "macro_f1", "roc_auc")


def _finetune_results(adata: ad.AnnData, key: str) -> Mapping:
    target = rna_modality(adata)
    if key not in target.uns:
        raise KeyError(
            f"adata.uns has no {key!r} results; run scgf.tl.finetune(adata, ...) first (or pass "
            "the key of your run as key=)."
        )
    return target.uns[key]


def fold_metrics(results: Mapping) -> list[Mapping]:
    """The per-fold metrics of a cross-validated run (gene classification), in fold order."""
    folds = results.get("folds")
    if folds is None:
        return []
    if isinstance(folds, Mapping):  # stored as {"0": {...}, "1": {...}} (h5ad has no lists)
        return [folds[k] for k in sorted(folds, key=lambda k: int(str(k).lstrip("fold_")))]
    return list(folds)


def split_metrics(results: Mapping) -> dict[str, dict[str, Mapping]]:
    """``{task: {split: metrics}}`` of a fine-tuning run; a cross-validated run's folds are
    its splits (``"fold0"``, ``"fold1"``, …) of one task."""
    if "folds" in results:
        task = _single_task_name(results)
        return {task: {f"fold{i}": m for i, m in enumerate(fold_metrics(results))}}
    return {str(t): dict(splits) for t, splits in results.get("metrics", {}).items()}


def _single_task_name(results: Mapping) -> str:
    tasks = results.get("tasks")
    if isinstance(tasks, Mapping) and len(tasks) == 1:
        return str(next(iter(tasks)))
    return "gene" if "folds" in results else "label"


def run_classes(results: Mapping, task: str) -> list[str]:
    """Class names of ``task`` in id order, as the run recorded them."""
    for name in ("tasks", "classes"):
        found = results.get(name)
        if isinstance(found, Mapping) and task in found:
            return [str(c) for c in found[task]]
        if found is not None and not isinstance(found, Mapping) and "folds" in results:
            return [str(c) for c in found]  # gene classification: one list of classes
    raise KeyError(f"The run records no classes of task {task!r}.")


def finetune_metrics_df(adata: ad.AnnData, *, key: str = FINETUNE_KEY) -> pd.DataFrame:
    """The evaluation metrics of a fine-tuning run as a long table.

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.finetune` ran on (or the gene-classification run's, with
        ``key="scgf_finetune_genes"``).
    key
        The ``uns`` key of the run.

    Returns
    -------
    One row per task, split and metric: ``task``, ``split`` (``"train"``, ``"validation"``,
    ``"test"``; ``"fold0"``, ``"fold1"``, … for a cross-validated run), ``metric`` (``n``,
    ``accuracy``, ``macro_f1`` and, for two classes, ``roc_auc``) and ``value`` (float).
    Confusion matrices and ROC curves are drawn by :func:`scgf.pl.confusion_matrix` and
    :func:`scgf.pl.roc`.
    """
    results = _finetune_results(adata, key)
    rows = []
    for task, splits in split_metrics(results).items():
        for split, metrics in splits.items():
            for metric in SCALAR_METRICS:
                value = metrics.get(metric)
                if value is None or (np.ndim(value) == 0 and pd.isna(value)):
                    continue
                rows.append((task, str(split), metric, float(value)))
    return pd.DataFrame(rows, columns=["task", "split", "metric", "value"])


def training_history_df(adata: ad.AnnData, *, key: str = FINETUNE_KEY) -> pd.DataFrame:
    """The training history of a fine-tuning run: one row per evaluation.

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.finetune` ran on.
    key
        The ``uns`` key of the run.

    Returns
    -------
    A copy of the run's history: ``epoch``, ``step``, ``train_loss``, ``eval_loss``,
    ``eval_accuracy``, ``eval_macro_f1`` (and any other logged value), in training order.
    """
    results = _finetune_results(adata, key)
    history = results.get("history")
    if history is None:
        raise KeyError(f"adata.uns[{key!r}] has no training history.")
    return pd.DataFrame(history).reset_index(drop=True)


def prediction_tasks(adata: ad.AnnData, key: str) -> dict[str, tuple[str, str | None, list[str]]]:
    """``{task: (obs column, obsm key or None, classes)}`` of predictions stored under ``key``.

    Predictions of :func:`scgf.tl.predict` are described by ``uns[key]["classes"]``; an obs
    column alone (e.g. :func:`scgf.tl.finetune`'s held-out predictions) is one task whose
    classes are its categories.
    """
    target = rna_modality(adata)
    classes = (
        target.uns.get(key, {}).get("classes") if isinstance(target.uns.get(key), Mapping) else None
    )
    if classes:
        single = len(classes) == 1
        out = {}
        for task, names in classes.items():
            column = key if single else f"{key}_{task}"
            proba = f"{column}_proba"
            names = [str(n) for n in names]  # numpy strings after a read_h5ad
            out[str(task)] = (column, proba if proba in target.obsm else None, names)
        return out
    if key in target.obs:
        values = target.obs[key]
        names = (
            list(values.cat.categories)
            if hasattr(values, "cat")
            else sorted(values.dropna().unique())
        )
        proba = f"{key}_proba"
        return {key: (key, proba if proba in target.obsm else None, [str(n) for n in names])}
    raise KeyError(
        f"adata has no predictions under {key!r} (no obs[{key!r}] or uns[{key!r}]); run "
        f"scgf.tl.predict(adata, model=..., key_added={key!r}) first."
    )


def predictions_df(
    adata: ad.AnnData,
    *,
    key: str = _keys.PREDICTION,
    task: str | None = None,
    proba: bool = False,
    label_key: str | None = None,
) -> pd.DataFrame:
    """Predictions of :func:`scgf.tl.predict` (or :func:`scgf.tl.finetune`) as a long table.

    Parameters
    ----------
    adata
        The AnnData with predictions (or a MuData: its ``rna`` modality).
    key
        The ``key_added`` of the predictions.
    task
        Keep one task of a multi-task model.
    proba
        One row per cell and class with its probability, instead of one row per cell.
    label_key
        An ``obs`` column of true labels: adds ``label`` and ``correct`` (rows per cell).

    Returns
    -------
    Rows per cell and task, in ``adata``'s cell order: ``cell`` (obs name), ``task``,
    ``prediction`` (NaN for cells without tokens), ``probability`` (of the predicted class;
    NaN without stored probabilities) and, with ``label_key``, ``label`` and ``correct``.
    With ``proba=True``: ``cell``, ``task``, ``class``, ``probability``.
    """
    target = rna_modality(adata)
    tasks = prediction_tasks(target, key)
    if task is not None:
        if task not in tasks:
            raise KeyError(f"No predictions of task {task!r}; tasks are {list(tasks)}.")
        tasks = {task: tasks[task]}
    if label_key is not None and label_key not in target.obs:
        raise KeyError(f"label_key={label_key!r} is not an obs column.")
    cells = np.asarray(target.obs_names)
    frames = []
    for name, (column, proba_key, classes) in tasks.items():
        values = np.asarray(target.obsm[proba_key], dtype=np.float32) if proba_key else None
        if proba:
            if values is None:
                raise KeyError(
                    f"No stored probabilities of task {name!r} (obsm[{column + '_proba'!r}])."
                )
            frames.append(
                pd.DataFrame(
                    {
                        "cell": np.repeat(cells, len(classes)),
                        "task": name,
                        "class": pd.Categorical(np.tile(classes, len(cells)), categories=classes),
                        "probability": values.reshape(-1),
                    }
                )
            )
            continue
        prediction = target.obs[column]
        frame = pd.DataFrame({"cell": cells, "task": name, "prediction": prediction.to_numpy()})
        frame["prediction"] = pd.Categorical(frame["prediction"], categories=classes)
        if values is not None:
            codes = frame["prediction"].cat.codes.to_numpy()
            picked = values[np.arange(len(cells)), np.maximum(codes, 0)]
            frame["probability"] = np.where(codes >= 0, picked, np.nan).astype(np.float32)
        else:
            frame["probability"] = np.float32(np.nan)
        if label_key is not None:
            labels = np.asarray(target.obs[label_key].astype(object))
            frame["label"] = labels
            known = pd.notna(labels) & frame["prediction"].notna().to_numpy()
            same = frame["prediction"].astype(str).to_numpy() == labels.astype(str)
            frame["correct"] = pd.array(same, dtype="boolean")
            frame.loc[~known, "correct"] = pd.NA
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
