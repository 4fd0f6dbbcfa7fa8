"""Plots of fine-tuned classifiers: confusion matrix, training history, ROC curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .. import _keys
from .._anndata import rna_modality
from ..get._finetune import (
    FINETUNE_KEY,
    _finetune_results,
    run_classes,
    split_metrics,
    training_history_df,
)
from ._utils import axes, finish


def _pick_task(tasks: Sequence[str], task: str | None) -> str:
    tasks = list(tasks)
    if task is None:
        if len(tasks) != 1:
            raise ValueError(f"This run has several tasks {tasks}; pass task= naming one.")
        return tasks[0]
    if task not in tasks:
        raise KeyError(f"No results of task {task!r}; tasks are {tasks}.")
    return task


def _run_metrics(adata, key: str, task: str | None, split: str | None):
    """``(task, classes, [(split name, metrics)])`` of a run; ``split=None`` on a
    cross-validated run means every fold."""
    results = _finetune_results(adata, key)
    per_task = split_metrics(results)
    task = _pick_task(per_task, task)
    splits = per_task[task]
    if "folds" in results and split in (None, "test"):
        chosen = list(splits.items())
    else:
        split = "test" if split is None else split
        if split not in splits:
            raise KeyError(
                f"No metrics of split {split!r} for task {task!r}; splits are {list(splits)}."
            )
        chosen = [(split, splits[split])]
    return task, run_classes(results, task), chosen


def confusion_counts(
    adata: ad.AnnData,
    *,
    key: str = FINETUNE_KEY,
    task: str | None = None,
    split: str | None = "test",
    label_key: str | None = None,
    pred_key: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """The confusion counts (rows = true class, columns = predicted) and a title.

    From a fine-tuning run's metrics, or, with ``label_key``, from an ``obs`` column of true
    labels against predictions in ``obs[pred_key]`` (cells missing either are left out).
    """
    target = rna_modality(adata)
    if label_key is not None:
        pred_key = _keys.PREDICTION if pred_key is None else pred_key
        for name, column in (("label_key", label_key), ("pred_key", pred_key)):
            if column not in target.obs:
                raise KeyError(
                    f"{name}={column!r} is not an obs column"
                    + (
                        "; run scgf.tl.predict(adata, model=...) first."
                        if name == "pred_key"
                        else "."
                    )
                )
        true, pred = target.obs[label_key], target.obs[pred_key]
        keep = (true.notna() & pred.notna()).to_numpy()
        rows = _categories(true)
        cols = _categories(pred)
        table = pd.crosstab(
            pd.Categorical(true[keep].astype(str), categories=rows),
            pd.Categorical(pred[keep].astype(str), categories=cols),
            dropna=False,
        )
        table.index, table.columns = rows, cols
        return table, f"{pred_key} vs {label_key} (n={int(keep.sum())})"
    if pred_key is not None:
        raise ValueError("pred_key= compares predictions with true labels: pass label_key= too.")
    task, classes, chosen = _run_metrics(adata, key, task, split)
    counts = sum(np.asarray(m["confusion"], dtype=np.int64) for _, m in chosen)
    table = pd.DataFrame(counts, index=classes, columns=classes)
    where = chosen[0][0] if len(chosen) == 1 else f"{len(chosen)} folds"
    return table, f"{task}: {where} (n={int(counts.sum())})"


def _categories(values: pd.Series) -> list[str]:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories]
    return sorted(str(v) for v in values.dropna().unique())


def confusion_matrix(
    adata: ad.AnnData,
    *,
    key: str = FINETUNE_KEY,
    task: str | None = None,
    split: str = "test",
    normalize: bool = True,
    label_key: str | None = None,
    pred_key: str | None = None,
    cmap: str = "Blues",
    annotate: bool = True,
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """Heat map of true against predicted classes.

    By default the held-out test cells of :func:`scgf.tl.finetune` (from the run's metrics);
    with ``label_key``, the predictions of :func:`scgf.tl.predict` (``obs[pred_key]``) against
    true labels of new data (``obs[label_key]``).

    Parameters
    ----------
    adata
        The AnnData fine-tuning or prediction ran on.
    key
        The ``uns`` key of the fine-tuning run (``"scgf_finetune_genes"`` for gene
        classification: the folds' held-out genes summed, or one fold with ``split="fold0"``).
    task
        The task of a multi-task run.
    split
        ``"test"`` (default), ``"validation"`` or ``"train"``.
    normalize
        Show each true class's row as fractions (rows sum to 1) instead of counts; each cell
        is annotated with its value.
    label_key
        ``obs`` column of true labels, to compare with ``obs[pred_key]`` instead of a run.
    pred_key
        ``obs`` column of predictions (default ``"scgf_pred"``), with ``label_key``.
    cmap
        Colour map.
    annotate
        Write each cell's value.
    show, save, ax, return_fig
        As in scanpy: ``save=True`` writes ``confusion_matrix.pdf`` into
        ``scanpy.settings.figdir``, a string ``s`` writes ``confusion_matrix{s}``.

    Returns
    -------
    The figure with ``return_fig=True``, the axes with ``show=False``, else ``None``.
    """
    table, title = confusion_counts(
        adata, key=key, task=task, split=split, label_key=label_key, pred_key=pred_key
    )
    counts = table.to_numpy(dtype=np.float64)
    values = counts
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n_rows, n_cols = values.shape
    fig, ax = axes(ax, (0.5 * n_cols + 2.2, 0.45 * n_rows + 1.6))
    image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1 if normalize else None, aspect="auto")
    ax.set_xticks(np.arange(n_cols), table.columns, rotation=45, ha="right")
    ax.set_yticks(np.arange(n_rows), table.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalize else "cells")
    if annotate:
        threshold = (values.max() or 1) / 2
        for i in range(n_rows):
            for j in range(n_cols):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
                color = "white" if values[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    return finish(fig, ax, "confusion_matrix", show, save, return_fig)


def training_history(
    adata: ad.AnnData,
    *,
    key: str = FINETUNE_KEY,
    x: str = "epoch",
    losses: Sequence[str] | None = None,
    scores: Sequence[str] | None = None,
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """Losses (left axis) and validation scores (right axis) over training.

    Parameters
    ----------
    adata
        The AnnData :func:`scgf.tl.finetune` ran on.
    key
        The ``uns`` key of the run.
    x
        History column on the x axis: ``"epoch"`` or ``"step"``.
    losses
        History columns drawn as solid lines on the left axis (default: every column ending in
        ``loss``).
    scores
        History columns drawn dashed on the right axis, from 0 to 1 (default:
        ``eval_accuracy`` and ``eval_macro_f1`` where logged).
    show, save, ax, return_fig
        As in scanpy (``save=True`` writes ``training_history.pdf``).

    Returns
    -------
    The figure with ``return_fig=True``, the (loss) axes with ``show=False``, else ``None``.
    """
    history = training_history_df(adata, key=key)
    if x not in history:
        raise KeyError(f"The history has no column {x!r}; columns are {list(history.columns)}.")
    if losses is None:
        losses = [c for c in history.columns if str(c).endswith("loss")]
    if scores is None:
        scores = [c for c in ("eval_accuracy", "eval_macro_f1") if c in history]
    missing = [c for c in (*losses, *scores) if c not in history]
    if missing:
        raise KeyError(
            f"The history has no columns {missing}; columns are {list(history.columns)}."
        )
    fig, ax = axes(ax, (5, 3.2))
    lines = []
    for column in losses:
        part = history[[x, column]].dropna()
        lines += ax.plot(part[x], part[column], marker="o", markersize=3, label=column)
    ax.set_xlabel(x)
    ax.set_ylabel("loss")
    if scores:
        right = ax.twinx()
        for i, column in enumerate(scores, start=len(losses)):  # colours go on from the losses
            part = history[[x, column]].dropna()
            lines += right.plot(
                part[x],
                part[column],
                linestyle="--",
                marker="s",
                markersize=3,
                color=f"C{i % 10}",
                label=column,
            )
        right.set_ylim(0, 1.02)
        right.set_ylabel("score")
    ax.legend(lines, [line.get_label() for line in lines], fontsize="small", frameon=False)
    return finish(fig, ax, "training_history", show, save, return_fig)


def roc(
    adata: ad.AnnData,
    *,
    key: str = FINETUNE_KEY,
    task: str | None = None,
    split: str | Sequence[str] | None = "test",
    show: bool | None = None,
    save: str | bool | None = None,
    ax=None,
    return_fig: bool | None = None,
):
    """ROC curves of a two-class fine-tuning run, with their areas under the curve.

    For :func:`scgf.tl.finetune` the curve of each split asked for; for a cross-validated
    run (gene classification, ``key="scgf_finetune_genes"``) every fold's curve, thin, and
    their mean true-positive rate at each false-positive rate with a ± 1 standard deviation
    band, labelled with the mean ± sd AUC. Curves are class 1's probability on 100 evenly
    spaced false-positive rates, as the reference reports them.

    Parameters
    ----------
    adata
        The AnnData the run was on.
    key
        The ``uns`` key of the run.
    task
        The task of a multi-task run.
    split
        A split or a list of splits (``"test"``, ``"validation"``, ``"train"``); on a
        cross-validated run ``"test"``/``None`` means every fold, ``"fold0"`` one fold.
    show, save, ax, return_fig
        As in scanpy (``save=True`` writes ``roc.pdf``).

    Returns
    -------
    The figure with ``return_fig=True``, the axes with ``show=False``, else ``None``.
    """
    splits = [split] if split is None or isinstance(split, str) else list(split)
    curves = []  # (name, metrics)
    task_name = classes = None
    folds = "folds" in _finetune_results(adata, key)
    for one in splits:
        task_name, classes, chosen = _run_metrics(adata, key, task, one)
        curves += chosen
    if len(classes) != 2:
        raise ValueError(
            f"ROC curves are drawn for two-class tasks; task {task_name!r} has {len(classes)} "
            f"classes ({', '.join(classes)}). Use scgf.pl.confusion_matrix."
        )
    drawn = [(name, m) for name, m in curves if _roc_of(m) is not None]
    if not drawn:
        raise ValueError(
            f"The run has no ROC curve for {', '.join(n for n, _ in curves)} (a split with "
            "cells of one class only has none)."
        )
    fig, ax = axes(ax, (4, 4))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    if folds and len(drawn) > 1:
        _draw_folds(ax, drawn)
    else:
        for name, metrics in drawn:
            fpr, tpr = _roc_of(metrics)
            auc = metrics.get("roc_auc")
            label = name if auc is None else f"{name} (AUC = {float(auc):.3f})"
            ax.plot(fpr, tpr, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"false positive rate ({classes[0]} called {classes[1]})")
    ax.set_ylabel(f"true positive rate ({classes[1]})")
    ax.set_title(str(task_name), fontsize="medium")
    ax.legend(loc="lower right", fontsize="small", frameon=False)
    return finish(fig, ax, "roc", show, save, return_fig)


def _roc_of(metrics: Mapping):
    curve = metrics.get("roc")
    if not isinstance(curve, Mapping) or "fpr" not in curve:
        return None
    return np.asarray(curve["fpr"], dtype=float), np.asarray(curve["tpr"], dtype=float)


def _draw_folds(ax, drawn) -> None:
    """Each fold thin; the mean curve with a ± 1 sd band, on a common fpr grid."""
    grid = np.linspace(0, 1, 100)
    tprs, aucs = [], []
    for i, (_, metrics) in enumerate(drawn):
        fpr, tpr = _roc_of(metrics)
        ax.plot(fpr, tpr, color="C0", alpha=0.3, linewidth=0.8, label="folds" if i == 0 else None)
        tprs.append(np.interp(grid, fpr, tpr))
        if metrics.get("roc_auc") is not None:
            aucs.append(float(metrics["roc_auc"]))
    tprs = np.array(tprs)
    # Sample sd over folds, as scgf.tl.finetune_genes reports its metrics' spread.
    mean, sd = tprs.mean(axis=0), tprs.std(axis=0, ddof=1)
    label = "mean"
    if aucs:
        spread = np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0
        label += f" (AUC = {np.mean(aucs):.3f} ± {spread:.3f})"
    ax.plot(grid, mean, color="C1", linewidth=2, label=label)
    ax.fill_between(
        grid,
        np.clip(mean - sd, 0, 1),
        np.clip(mean + sd, 0, 1),
        color="C1",
        alpha=0.2,
        label="± 1 sd",
    )
