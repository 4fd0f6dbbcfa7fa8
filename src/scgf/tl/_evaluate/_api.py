"""``scgf.tl.evaluate``: score embeddings against honest baselines on labelled cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from ... import _keys, _logging
from ..._anndata import count_matrix, rna_modality
from . import _baselines, _provenance

OnMismatch = Literal["skip", "score", "raise"]
MIN_CELLS = 50
SCIB_METRICS = (
    "isolated_labels",
    "nmi_ari_cluster_labels_kmeans",
    "nmi_ari_cluster_labels_leiden",
    "silhouette_label",
    "clisi_knn",
    "bras",
    "ilisi_knn",
    "kbet_per_label",
    "graph_connectivity",
    "pcr_comparison",
)
SKIPPABLE = (*SCIB_METRICS, "probe")


class EmbeddingMismatchError(ValueError):
    """An embedding's rows do not belong to ``adata``'s cells (reordered or foreign)."""


def default_reps(adata: ad.AnnData) -> list[str]:
    """Every ``X_geneformer*`` key of ``obsm``, then the two PCA baselines."""
    own = [k for k in adata.obsm if str(k).startswith(_keys.EMBEDDING)]
    return [*own, *_baselines.BASELINES]


def _check_labels(adata: ad.AnnData, key: str, what: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(
            f"{what}={key!r} is not an obs column; adata.obs has {list(adata.obs.columns)}."
        )
    return adata.obs[key]


def _check_reps(adata: ad.AnnData, reps) -> tuple[list[str], dict[str, np.ndarray]]:
    """The names to score, and the arrays given directly (``reps`` as a mapping)."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(reps, Mapping):
        arrays = {str(name): np.asarray(values) for name, values in reps.items()}
        names = list(arrays)
    else:
        names = default_reps(adata) if reps is None else [reps] if isinstance(reps, str) else reps
        names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("reps= is empty; name the obsm keys to evaluate.")
    for key in names:
        if key in arrays:
            values, where = arrays[key], f"reps[{key!r}]"
        elif key in _baselines.BASELINES and key not in adata.obsm:
            continue  # computed here
        elif key not in adata.obsm:
            raise KeyError(
                f"adata.obsm has no {key!r} (it has {list(adata.obsm)}); run "
                f"scgf.tl.embed(adata, key_added={key!r}) first, or name another key in reps=."
            )
        else:
            values, where = adata.obsm[key], f"adata.obsm[{key!r}]"
        shape = getattr(values, "shape", ())
        if len(shape) != 2 or shape[0] != adata.n_obs:
            raise ValueError(
                f"{where} has shape {shape}, but adata has {adata.n_obs} cells: an embedding "
                "needs one row per cell (cells × dimensions), in adata's cell order."
            )
        if not np.issubdtype(np.asarray(values[:1]).dtype, np.number):
            raise ValueError(f"{where} is not numeric ({np.asarray(values[:1]).dtype}).")
    return names, arrays


def evaluate(
    adata: ad.AnnData,
    label_key: str,
    *,
    batch_key: str | None = None,
    reps: str | Sequence[str] | Mapping[str, np.ndarray] | None = None,
    layer: str | None = None,
    n_comps: int = 50,
    n_seeds: int = 3,
    test_size: float = 0.25,
    probe_max_train: int | None = 10_000,
    skip_metrics: Sequence[str] = (),
    on_mismatch: OnMismatch = "skip",
    random_state: int = 0,
    key_added: str = _keys.EVALUATE,
    copy: bool = False,
) -> ad.AnnData | None:
    """Score embeddings side by side with PCA baselines on labelled cells.

    Every embedding in ``reps`` is first checked to belong to ``adata``'s cells (see
    *Provenance* below), then scored with scib-metrics (bio conservation; batch correction
    with ``batch_key``; their aggregates) and with a label-transfer probe.

    Parameters
    ----------
    adata
        Cells with labels, the embeddings in ``obsm``, and raw counts in ``X`` (or ``layer``)
        for the baselines and the provenance check. A MuData: its ``rna`` modality.
    label_key
        ``obs`` column of cell labels (cell types). Cells without a label are left out.
    batch_key
        ``obs`` column of batches. Adds the batch-correction metrics, and the probe is then
        trained on some batches and tested on others. With a single batch the batch metrics
        are skipped (a warning says so).
    reps
        ``obsm`` keys to score. Default: every ``X_geneformer*`` key, ``X_pca_hvg`` and
        ``X_pca_unintegrated``. The two baselines are computed when absent (from the counts,
        on a copy: ``X`` is not changed) and kept in ``obsm`` with ``uns[name]["params"]``:
        ``X_pca_hvg`` is a PCA of the log-normalised 2,000 most variable genes,
        ``X_pca_unintegrated`` one of all log-normalised genes (also scib-metrics' reference
        for its PCR comparison). A mapping ``{name: array}`` scores arrays that are not in
        ``obsm`` (e.g. an embedding written by another tool, read from a file), each checked
        to have one row per cell; they are not stored.
    layer
        Layer of raw counts instead of ``X``.
    n_comps
        Principal components of the baselines (and of the provenance check's reference).
    n_seeds
        Train/test splits of the probe (mean and sd over them). With ``batch_key`` and at
        most ``n_seeds`` batches, each batch is held out once instead.
    test_size
        Fraction of cells (of batches, with ``batch_key``) the probe is tested on.
    probe_max_train
        Train each probe on at most this many cells (a random subset; ``None``: all).
    skip_metrics
        scib-metrics metric names to leave out (e.g. ``"kbet_per_label"``, slow on large
        data), or ``"probe"``. ``"nmi_ari_cluster_labels_leiden"`` is off by default, as in
        scib-metrics.
    on_mismatch
        What to do with an embedding that fails the provenance check: ``"skip"`` it with a
        warning (default), ``"score"`` it anyway (with the warning), or ``"raise"``
        :class:`~scgf.tl.EmbeddingMismatchError`.
    random_state
        Seed of the baselines' PCA, the probe splits and the provenance null.
    key_added
        Results go to ``adata.uns[key_added]``: ``"results"`` (one row per embedding and
        metric: ``embedding``, ``metric``, ``group`` (``bio``, ``batch``, ``probe``,
        ``aggregate``), ``value``, ``sd`` (probes: over the splits)), ``"provenance"`` (one
        row per embedding) and ``"params"``. Read them with :func:`scgf.get.evaluation_df`.
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the evaluated copy when ``copy=True``.

    Notes
    -----
    *Provenance.* A public benchmark once scored Geneformer near zero because the embedding
    it read was in another cell order. Before scoring, each embedding is checked against the
    cells: a row signature recorded when it was written (tools that record one; the
    baselines do), and, for any embedding, whether its nearest neighbours agree with the
    cells' own expression more than a random relabelling of the cells does. Results are in
    ``uns[key_added]["provenance"]`` (``status`` ``"ok"`` or ``"mismatch"``).

    The aggregates are scib-metrics' own: the mean of the bio-conservation metrics, of the
    batch-correction metrics, and ``Total`` = 0.6 bio + 0.4 batch, unscaled (comparable
    across calls). Probe scores are reported beside them, not folded in.
    """
    from ._metrics import MAX_NEIGHBORS, neighbors, quiet, scib_metrics, scib_scores
    from ._probe import probe_scores, probe_splits

    # --- everything is checked before anything is computed or written --------------------
    target = rna_modality(adata)
    labels = _check_labels(target, label_key, "label_key")
    if labels.nunique(dropna=True) < 2:
        raise ValueError(
            f"obs[{label_key!r}] has {labels.nunique(dropna=True)} class(es) "
            f"({list(labels.dropna().unique()[:3])}); scoring an embedding needs at least two "
            "labels. Pass label_key= naming a column of cell types."
        )
    batches = _check_labels(target, batch_key, "batch_key") if batch_key is not None else None
    unknown = sorted(set(skip_metrics) - set(SKIPPABLE))
    if unknown:
        raise ValueError(f"skip_metrics={unknown} unknown; choose from {list(SKIPPABLE)}.")
    if on_mismatch not in ("skip", "score", "raise"):
        raise ValueError(f"on_mismatch={on_mismatch!r}; use 'skip', 'score' or 'raise'.")
    if n_seeds < 1 or not 0 < test_size < 1:
        raise ValueError(f"n_seeds={n_seeds} must be ≥ 1 and test_size={test_size} in (0, 1).")
    reps, arrays = _check_reps(target, reps)
    scib_metrics()  # the install hint before any work
    missing = [k for k in reps if k not in target.obsm and k not in arrays]
    counts = None
    if missing or layer is not None or target.X is not None:
        counts = count_matrix(target, layer)

    notes: list[str] = []
    if batches is not None and batches.nunique(dropna=True) < 2:
        note = (
            f"obs[{batch_key!r}] has a single batch: batch-correction metrics skipped, "
            "probe splits not grouped by batch"
        )
        _logging.warn(note + ".")
        notes.append(note)
        batches = None

    start = _logging.info(
        f"evaluating {len(reps)} embeddings on {target.n_obs} cells "
        f"(labels {label_key!r}" + (f", batches {batch_key!r})" if batches is not None else ")")
    )
    # --- baselines and the expression reference -----------------------------------------
    computed: dict[str, tuple[np.ndarray, dict]] = {}
    for key in missing:
        computed[key] = _baselines.expression_pca(
            counts, hvg=key == _baselines.HVG, n_comps=n_comps, seed=random_state
        )
    reference = None
    if _baselines.UNINTEGRATED in computed:
        reference = computed[_baselines.UNINTEGRATED][0]
    elif counts is not None:
        reference = _baselines.expression_pca(
            counts, hvg=False, n_comps=n_comps, seed=random_state
        )[0]
    else:
        notes.append("no counts in adata.X: the neighbourhood check of provenance was skipped")

    def values_of(key: str) -> np.ndarray:
        if key in arrays:
            return arrays[key]
        return computed[key][0] if key in computed else np.asarray(target.obsm[key])

    # --- cells scored: labelled (and batched), with every embedding finite ----------------
    keep = labels.notna().to_numpy()
    if batches is not None:
        keep &= batches.notna().to_numpy()
    for key in reps:
        keep &= np.isfinite(values_of(key)).all(axis=1)
    if keep.sum() < MIN_CELLS:
        raise ValueError(
            f"Only {int(keep.sum())} cells have a label, a batch and a finite row in every "
            f"embedding; evaluating needs at least {MIN_CELLS}."
        )
    if not keep.all():
        notes.append(f"{int((~keep).sum())} cells left out (no label/batch, or NaN rows)")
    y = labels.to_numpy()[keep].astype(str)
    if len(np.unique(y)) < 2:
        raise ValueError(f"The cells kept have a single label in obs[{label_key!r}].")
    groups = batches.to_numpy()[keep].astype(str) if batches is not None else None

    # --- neighbours once per embedding; provenance ----------------------------------------
    with quiet():
        graphs = {k: neighbors(values_of(k)[keep], MAX_NEIGHBORS, seed=random_state) for k in reps}
        ref_graph = (
            neighbors(reference[keep], _provenance.AGREEMENT_K, seed=random_state)
            if reference is not None
            else None
        )
    rows = [
        _provenance_row(
            target,
            key,
            values_of(key),
            computed.get(key),
            key in arrays,
            graphs[key],
            ref_graph,
            keep,
            random_state,
        )
        for key in reps
    ]
    provenance = pd.DataFrame(rows)
    bad = provenance.loc[provenance["status"] == "mismatch", ["embedding", "detail"]]
    if len(bad):
        listed = "; ".join(f"{e}: {d}" for e, d in bad.itertuples(index=False))
        if on_mismatch == "raise":
            raise EmbeddingMismatchError(
                f"Embeddings whose rows do not belong to these cells: {listed}. Recompute them "
                "on this adata (scgf.tl.embed), or pass on_mismatch='skip'."
            )
        action = "not scored" if on_mismatch == "skip" else "scored anyway (on_mismatch='score')"
        _logging.warn(f"Embeddings whose rows do not belong to these cells, {action}: {listed}")
    scored = [k for k in reps if on_mismatch == "score" or k not in set(bad["embedding"])]
    if not scored:
        raise EmbeddingMismatchError(
            "No embedding left to score: every one failed the provenance check "
            f"({'; '.join(bad['detail'])}). Pass on_mismatch='score' to score them anyway."
        )

    # --- scores ---------------------------------------------------------------------------
    embeddings = {k: values_of(k)[keep] for k in scored}
    unintegrated = reference[keep] if reference is not None else None
    if batches is not None and unintegrated is None:
        skip_metrics = [*skip_metrics, "pcr_comparison"]
        notes.append("no counts: pcr_comparison skipped")
    tables = [
        scib_scores(
            embeddings,
            {k: graphs[k] for k in scored},
            y,
            groups,
            unintegrated,
            skip=[m for m in skip_metrics if m != "probe"],
        )
    ]
    how = None
    if "probe" not in skip_metrics:
        splits, how = probe_splits(
            y, groups, n_seeds=n_seeds, test_size=test_size, seed=random_state
        )
        for key in scored:
            probe = probe_scores(
                embeddings[key], y, splits, max_train=probe_max_train, seed=random_state
            )
            tables.append(probe.assign(embedding=key))
    results = pd.concat(tables, ignore_index=True)[["embedding", "metric", "group", "value", "sd"]]
    order = {"bio": 0, "batch": 1, "probe": 2, "aggregate": 3}
    results = results.sort_values(
        ["embedding", "group"],
        key=lambda c: (
            c.map(order) if c.name == "group" else c.map({k: i for i, k in enumerate(scored)})
        ),
        kind="stable",
    ).reset_index(drop=True)

    # --- write ----------------------------------------------------------------------------
    data = adata.copy() if copy else adata
    out = rna_modality(data)
    for key, (values, params) in computed.items():
        out.obsm[key] = values
        out.uns[key] = {
            "params": params,
            "rows": _provenance.row_signature(out.obs_names, values),
        }
    import scib_metrics as scib

    out.uns[key_added] = {
        "results": results,
        "provenance": provenance,
        "params": {
            "label_key": label_key,
            "batch_key": batch_key or "none",
            "reps": list(reps),
            "scored": scored,
            "n_cells": int(keep.sum()),
            "n_comps": n_comps,
            "n_seeds": n_seeds,
            "test_size": test_size,
            "probe_split": how or "skipped",
            "probe_max_train": probe_max_train if probe_max_train is not None else "all",
            "skip_metrics": list(skip_metrics),
            "on_mismatch": on_mismatch,
            "random_state": random_state,
            "scib_metrics": scib.__version__,
            "notes": notes,
        },
    }
    written = ", ".join(f"obsm[{k!r}]" for k in computed)
    _logging.info(
        f"    finished: added {written + ', ' if written else ''}uns[{key_added!r}]",
        time=start,
    )
    return data if copy else None


def _provenance_row(adata, key, values, computed, given, graph, ref_graph, keep, seed) -> dict:
    """One row of the provenance table (see :mod:`._provenance`)."""
    record = adata.uns.get(key, {}) if computed is None else {"params": computed[1]}
    if given:
        record = {"params": {"tool": "array given in reps"}}
    record = record if isinstance(record, dict) else {}
    params = record.get("params", {}) if isinstance(record.get("params", {}), dict) else {}
    if computed is not None:
        source, recorded = "scgf.tl.evaluate (computed now)", params.get("baseline", "")
    elif "emb_layer" in params:
        source = "scgf.tl.embed"
        recorded = ", ".join(
            f"{p}={params[p]}" for p in ("name", "emb_layer", "pooling") if p in params
        )
    else:
        source = str(params.get("tool", "unrecorded"))
        recorded = ", ".join(f"{p}={v}" for p, v in params.items() if np.isscalar(v))[:200]
    values = np.asarray(values)
    if computed is not None:
        signature, detail = "verified", "computed from these cells in this call"
    elif "rows" in record:
        signature, detail = _provenance.check_signature(record["rows"], adata.obs_names, values)
    else:
        signature, detail = "not recorded", "no row signature recorded with it"
    agreement = chance = z = np.nan
    if ref_graph is not None:
        agreement, chance, z = _provenance.neighbour_agreement(
            graph.indices[:, : _provenance.AGREEMENT_K], ref_graph.indices, seed=seed
        )
    unrelated = bool(z < _provenance.MIN_Z) if np.isfinite(z) else False
    if signature == "mismatch":
        status = "mismatch"
    elif signature == "verified":
        status = "ok"
        if unrelated:
            detail += "; its neighbourhoods barely agree with the expression"
    elif unrelated:
        status = "mismatch"
        detail = (
            f"its nearest neighbours agree with the cells' expression no more than a random "
            f"reordering of the cells does ({agreement:.3f} vs {chance:.3f} by chance, "
            f"z={z:.1f}): reordered, or from other cells"
        )
    else:
        status = "ok"
        detail += f"; neighbours agree with the expression ({agreement:.3f} vs {chance:.3f})"
    return {
        "embedding": key,
        "source": source,
        "recorded": recorded,
        "n_dims": int(values.shape[1]),
        "nan_rows": int((~np.isfinite(values).all(axis=1)).sum()),
        "signature": signature,
        "agreement": agreement,
        "chance": chance,
        "z": z,
        "status": status,
        "detail": detail,
    }
