"""scgf.tl.evaluate: known answers on synthetic cells whose truth is known, the provenance
check, the grouped probe split, and bad input.

scib-metrics compiles its jax kernels once per array shape, so every scored embedding here
has the same width (``WIDTH``) and the slowest-compiling metrics (kBET, BRAS) are left out
of the shared run; the known answers do not need them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgf
from scgf.tl._evaluate import _probe, _provenance

pytest.importorskip("scib_metrics")
import anndata as ad

N_CELLS, N_LABELS, WIDTH = 240, 3, 6
FAST = ("kbet_per_label", "bras")


def synthetic(n: int = N_CELLS, genes: int = 60, seed: int = 0) -> ad.AnnData:
    """Counts from label programmes plus a batch shift, and embeddings whose quality is known:
    ``X_geneformer`` the labels' one-hot (+ noise), ``X_geneformer_batch`` the same plus a
    batch axis (batch-confounded), ``X_random`` pure noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, N_LABELS, n)
    batch = rng.integers(0, 2, n)
    means = (
        rng.gamma(1.0, 1.0, genes)
        + rng.gamma(0.5, 6.0, (N_LABELS, genes))[label]
        + rng.gamma(0.5, 3.0, (2, genes))[batch]
    )
    counts = rng.poisson(means * rng.uniform(0.5, 1.5, (n, 1))).astype(np.float32)
    adata = ad.AnnData(
        sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "cell_type": pd.Categorical([f"type{i}" for i in label]),
                "batch": pd.Categorical([f"b{i}" for i in batch]),
            },
            index=[f"cell{i}" for i in range(n)],
        ),
    )
    adata.var_names = [f"g{i}" for i in range(genes)]
    noise = 0.15 * rng.standard_normal((n, WIDTH)).astype(np.float32)
    onehot = np.zeros((n, WIDTH), np.float32)
    onehot[np.arange(n), label] = 1
    adata.obsm["X_geneformer"] = onehot + noise
    confounded = onehot.copy()
    confounded[:, N_LABELS] = 4.0 * batch
    adata.obsm["X_geneformer_batch"] = confounded + noise
    adata.obsm["X_random"] = rng.standard_normal((n, WIDTH)).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def evaluated():
    adata = synthetic()
    original = adata.X.copy()
    with pytest.warns(UserWarning, match="scored anyway"):  # X_random: checked below
        scgf.tl.evaluate(
            adata,
            "cell_type",
            batch_key="batch",
            reps=["X_geneformer", "X_geneformer_batch", "X_random", "X_pca_hvg"],
            n_comps=WIDTH,
            skip_metrics=FAST,
            on_mismatch="score",
        )
    return adata, original


def values(adata, group=None):
    table = scgf.get.evaluation_df(adata)
    if group is not None:
        table = table[table["group"] == group]
    return table.pivot(index="metric", columns="embedding", values="value")


def test_label_embedding_beats_random_on_bio_and_probe(evaluated):
    adata, _ = evaluated
    bio, probe = values(adata, "bio"), values(adata, "probe")
    assert {"KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI", "Isolated labels"} <= set(
        bio.index
    )
    assert (bio["X_geneformer"] > bio["X_random"]).all()
    assert bio.loc["KMeans ARI", "X_geneformer"] > 0.9 > 0.2 > bio.loc["KMeans ARI", "X_random"]
    assert (probe["X_geneformer"] > probe["X_random"] + 0.3).all()
    aggregate = values(adata, "aggregate")
    assert (
        aggregate.loc["Bio conservation", "X_geneformer"]
        > aggregate.loc["Bio conservation", "X_random"]
    )


def test_batch_confounded_embedding_scores_worse_on_batch_metrics(evaluated):
    adata, _ = evaluated
    batch = values(adata, "batch")
    assert {"iLISI", "Graph connectivity", "PCR comparison"} <= set(batch.index)
    assert batch.loc["iLISI", "X_geneformer_batch"] < batch.loc["iLISI", "X_geneformer"] - 0.3
    assert (
        batch.loc["PCR comparison", "X_geneformer_batch"]
        < batch.loc["PCR comparison", "X_geneformer"]
    )
    aggregate = values(adata, "aggregate")
    assert (
        aggregate.loc["Batch correction", "X_geneformer_batch"]
        < aggregate.loc["Batch correction", "X_geneformer"]
    )
    # scib-metrics' own weighting: Total = 0.6 bio + 0.4 batch.
    total = 0.6 * aggregate.loc["Bio conservation"] + 0.4 * aggregate.loc["Batch correction"]
    np.testing.assert_allclose(aggregate.loc["Total"], total)


def test_results_table_params_and_baselines(evaluated):
    adata, original = evaluated
    results = scgf.get.evaluation_df(adata)
    assert list(results.columns) == ["embedding", "metric", "group", "value", "sd"]
    assert set(results["group"]) == {"bio", "batch", "probe", "aggregate"}
    probe = results[results["group"] == "probe"]
    assert len(probe) == 4 * 4 and probe["sd"].notna().all()  # two batches: two folds
    params = adata.uns["scgf_evaluate"]["params"]
    assert params["probe_split"] == "leave-one-batch-out (2 batches)"
    assert params["n_cells"] == N_CELLS and params["skip_metrics"] == list(FAST)
    # The baseline: in obsm with its parameters and row signature; X untouched.
    assert adata.obsm["X_pca_hvg"].shape == (N_CELLS, WIDTH)
    assert adata.uns["X_pca_hvg"]["params"]["baseline"] == "hvg"
    assert "X_pca_unintegrated" not in adata.obsm  # not asked for: used, not stored
    assert (adata.X != original).nnz == 0
    wide = scgf.get.evaluation_df(adata, wide=True)
    assert wide.index[0] == "X_geneformer" and ("aggregate", "Total") in wide.columns


def test_random_embedding_is_reported_by_the_neighbourhood_check(evaluated):
    adata, _ = evaluated
    prov = scgf.get.evaluation_df(adata, provenance=True).set_index("embedding")
    assert prov.loc["X_random", "status"] == "mismatch"
    assert prov.loc["X_random", "z"] < _provenance.MIN_Z
    assert (prov.loc[["X_geneformer", "X_geneformer_batch", "X_pca_hvg"], "status"] == "ok").all()
    assert prov.loc["X_pca_hvg", "signature"] == "verified"


def test_row_signature_catches_a_shuffled_embedding():
    rng = np.random.default_rng(1)
    names = pd.Index([f"c{i}" for i in range(500)])
    values = rng.standard_normal((500, 8)).astype(np.float32)
    signature = _provenance.row_signature(names, values)
    assert _provenance.check_signature(signature, names, values)[0] == "verified"
    # The same cells reordered together with their rows (adata[perm]) and a subset still pass.
    perm = rng.permutation(500)
    assert _provenance.check_signature(signature, names[perm], values[perm])[0] == "verified"
    assert _provenance.check_signature(signature, names[:100], values[:100])[0] == "verified"
    # Rows shuffled under fixed cell names: caught.
    status, detail = _provenance.check_signature(signature, names, values[perm])
    assert status == "mismatch" and "reordered" in detail
    # Stored at lower precision: still the same rows.
    half = values.astype(np.float16)
    assert _provenance.check_signature(signature, names, half)[0] == "verified"
    with_nan = values.copy()
    with_nan[::7] = np.nan  # cells without tokens get NaN rows from tl.embed
    nan_signature = _provenance.row_signature(names, with_nan)
    assert _provenance.check_signature(nan_signature, names, with_nan)[0] == "verified"
    assert _provenance.check_signature(nan_signature, names, with_nan[perm])[0] == "mismatch"
    assert _provenance.check_signature(signature, pd.Index(["x"]), values[:1])[0] == (
        "no recorded cell"
    )


def test_neighbour_agreement_separates_true_from_shuffled_rows():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 10)) * 4
    cells = centres[rng.integers(0, 5, 400)] + rng.standard_normal((400, 10))
    from sklearn.neighbors import NearestNeighbors

    def knn(x):
        return NearestNeighbors(n_neighbors=16).fit(x).kneighbors(x)[1][:, 1:]

    reference = knn(cells)
    projected = knn(cells @ rng.standard_normal((10, 4)))  # a different but true embedding
    shuffled = knn((cells @ rng.standard_normal((10, 4)))[rng.permutation(400)])
    agreement, chance, z = _provenance.neighbour_agreement(projected, reference)
    assert agreement > 3 * chance and z > _provenance.MIN_Z
    assert _provenance.neighbour_agreement(shuffled, reference)[2] < _provenance.MIN_Z


def test_recorded_rows_of_a_shuffled_embedding_are_reported(evaluated):
    adata, _ = evaluated
    work = adata.copy()
    # A tool recorded the embedding's rows; afterwards someone put the rows in another order.
    work.uns["X_geneformer"] = {
        "params": {"name": "tiny", "emb_layer": -1, "pooling": "cls"},
        "rows": _provenance.row_signature(work.obs_names, work.obsm["X_geneformer"]),
    }
    perm = np.random.default_rng(3).permutation(work.n_obs)
    work.obsm["X_geneformer"] = work.obsm["X_geneformer"][perm]
    before = {k: v.copy() for k, v in work.obsm.items()}
    with pytest.raises(scgf.tl.EmbeddingMismatchError, match="reordered or replaced"):
        scgf.tl.evaluate(
            work,
            "cell_type",
            reps=["X_geneformer", "X_geneformer_batch"],
            n_comps=WIDTH,
            skip_metrics=(*FAST, "probe"),
            on_mismatch="raise",
            key_added="again",
        )
    assert "again" not in work.uns and all(np.array_equal(before[k], work.obsm[k]) for k in before)


def test_grouped_probe_split_never_shares_a_batch():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 300).astype(str)
    for n_batches, expected in ((2, 2), (3, 3), (6, 3)):
        groups = np.array([f"b{i}" for i in rng.integers(0, n_batches, 300)])
        splits, how = _probe.probe_splits(labels, groups, n_seeds=3)
        assert len(splits) == expected, how
        for train, test in splits:
            assert not set(groups[train]) & set(groups[test])
            assert len(train) + len(test) == 300
        if n_batches <= 3:  # each batch held out exactly once
            assert sorted(g for _, t in splits for g in set(groups[t])) == sorted(set(groups))
    splits, how = _probe.probe_splits(labels, None, n_seeds=3)
    assert len(splits) == 3 and "stratified" in how


def test_probe_scores_know_the_answer():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 400)
    good = np.eye(4)[labels] + 0.1 * rng.standard_normal((400, 4))
    splits, _ = _probe.probe_splits(labels.astype(str), None, n_seeds=3)
    scores = _probe.probe_scores(good, labels, splits).set_index("metric")
    assert (scores["value"] > 0.97).all() and (scores["sd"] >= 0).all()
    noise = _probe.probe_scores(rng.standard_normal((400, 4)), labels, splits)
    assert (noise["value"] < 0.45).all()


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"label_key": "tissue"}, KeyError, "label_key='tissue' is not an obs column"),
        ("one_label", {}, ValueError, "needs at least two labels"),
        (None, {"batch_key": "donor"}, KeyError, "batch_key='donor' is not an obs column"),
        (None, {"reps": ["X_umap"]}, KeyError, "adata.obsm has no 'X_umap'"),
        ("short", {}, ValueError, r"reps\['ref'\] has shape \(5, 3\), but adata has 120 cells"),
        (None, {"skip_metrics": ["fid"]}, ValueError, r"skip_metrics=\['fid'\] unknown"),
        (None, {"on_mismatch": "ignore"}, ValueError, "on_mismatch='ignore'"),
        ("no_scib", {}, ImportError, r"pip install 'scgf\[eval\]'"),
    ],
)
def test_bad_input_is_refused_and_adata_unchanged(monkeypatch, change, kwargs, error, match):
    adata = synthetic(n=120)
    if change == "one_label":
        adata.obs["cell_type"] = "T cell"
    if change == "short":  # e.g. the reference tool's output, read from its file
        kwargs = {"reps": {"ref": np.zeros((5, 3))}}
    if change == "no_scib":
        import sys

        monkeypatch.setitem(sys.modules, "scib_metrics", None)
    before = adata.copy()
    kwargs = {"label_key": "cell_type", **kwargs}
    with pytest.raises(error, match=match):
        scgf.tl.evaluate(adata, kwargs.pop("label_key"), **kwargs)
    assert "scgf_evaluate" not in adata.uns and "X_pca_hvg" not in adata.obsm
    assert list(adata.obsm) == list(before.obsm) and list(adata.uns) == list(before.uns)


def test_single_batch_skips_batch_metrics_with_a_note():
    adata = synthetic(seed=6)  # the shared run's shapes: scib-metrics' kernels are compiled
    adata.obs["batch"] = "only"
    with pytest.warns(UserWarning, match="single batch: batch-correction metrics skipped"):
        result = scgf.tl.evaluate(
            adata,
            "cell_type",
            batch_key="batch",
            reps=["X_geneformer"],
            n_comps=WIDTH,
            skip_metrics=FAST,
            copy=True,
        )
    assert "scgf_evaluate" not in adata.uns  # copy=True leaves the input alone
    table = scgf.get.evaluation_df(result)
    assert "batch" not in set(table["group"])
    assert "stratified" in result.uns["scgf_evaluate"]["params"]["probe_split"]
    assert any("single batch" in n for n in result.uns["scgf_evaluate"]["params"]["notes"])


def test_shuffled_array_is_skipped_and_reported(evaluated):
    adata, _ = evaluated
    work = adata.copy()
    shuffled = work.obsm["X_geneformer"][np.random.default_rng(7).permutation(work.n_obs)]
    with pytest.warns(UserWarning, match="not scored: length_sorted: its nearest neighbours"):
        scgf.tl.evaluate(
            work,
            "cell_type",
            reps={"X_geneformer": work.obsm["X_geneformer"], "length_sorted": shuffled},
            n_comps=WIDTH,
            skip_metrics=(*FAST, "probe"),
            key_added="shuffled",
        )
    results = scgf.get.evaluation_df(work, key="shuffled")
    assert set(results["embedding"]) == {"X_geneformer"}
    prov = scgf.get.evaluation_df(work, key="shuffled", provenance=True).set_index("embedding")
    assert prov.loc["length_sorted", "status"] == "mismatch"
    assert prov.loc["length_sorted", "source"] == "array given in reps"
    assert prov.loc["X_geneformer", "status"] == "ok"
