"""Hyperparameter search of scgf.tl.finetune_genes: trials on the first fold scored by its
validation genes' per-gene macro-F1, the best setting trained into every fold and the final
model, a study in SQLite that resumes, and bad input refused before anything is written."""

from __future__ import annotations

import anndata as ad
import numpy as np
import optuna
import pytest

import scgf
from scgf._train._saved import read_metadata
from scgf.tl._finetune._search import SearchSpaceError
from scgf.tl._genes import _folds
from tests._tiny import torch_threads
from tests.conftest import needs_data, needs_dicts
from tests.tl.test_genes import constructed_task, save_tiny_base

pytestmark = [needs_dicts, needs_data]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):  # tiny models: one thread is fastest on a busy machine
        yield


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_v2):
    return save_tiny_base(tmp_path_factory.mktemp("tiny_gene_base"))


STUDY = "scgf_finetune_genes"
# Far from the default 5e-5, so a training that ignored the search would show.
SPACE = {"learning_rate": ("log", 1e-3, 1e-2), "num_train_epochs": [1], "seed": ("int", 0, 9)}
FAST = dict(
    n_folds=3,
    max_folds=1,
    device="cpu",
    search_space=SPACE,
    training_args=dict(save_strategy="no", logging_strategy="no"),
)


@pytest.fixture(scope="module")
def constructed(vocab_v2):
    return constructed_task(vocab_v2)


@pytest.fixture
def task(constructed):
    """Fresh cells for each test (the task is built once)."""
    adata, labels = constructed
    return adata.copy(), labels


def _study(folder):
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder}/search.db")


def _learning_rates(out) -> list[float]:
    """The learning rate each saved model (fold 0, final) was trained with."""
    return [
        read_metadata(folder)["training_arguments"]["learning_rate"]
        for folder in (out / "fold_0", out)
    ]


def test_search_trains_the_best_setting_and_resumes(tmp_path, tiny_model, task):
    adata, labels = task
    out = tmp_path / "searched"
    scgf.tl.finetune_genes(adata, labels, model=tiny_model, output_dir=out, n_trials=2, **FAST)
    result = adata.uns["scgf_finetune_genes"]
    table = result["search"]
    assert len(table) == 2 and {"number", "value", "params_learning_rate"} <= set(table.columns)
    assert (out / "search.db").is_file() and not (out / "search").exists()  # trials removed
    best = _study(out).best_trial
    assert best.value == table["value"].max()
    assert 1e-3 <= best.params["learning_rate"] <= 1e-2
    # The fold and the final model are trained with the best trial's setting …
    assert _learning_rates(out) == [best.params["learning_rate"]] * 2
    assert read_metadata(out / "fold_0")["training_arguments"]["seed"] == best.params["seed"]
    assert read_metadata(out)["search"]["best"] == best.params
    assert result["params"]["search"] == {"fold": 0, "best": best.params, "n_trials": 2}
    assert result["params"]["training_arguments"]["learning_rate"] == best.params["learning_rate"]
    # … and the search scored a trial as fold 0 scores its validation genes: fold 0 repeats
    # the best trial (same genes, setting and seed), so it reaches the same macro-F1.
    assert result["folds"]["0"]["validation"]["macro_f1"] == pytest.approx(best.value, abs=1e-9)

    # A second call with resume=True adds trials to the same study.
    again = adata.copy()
    scgf.tl.finetune_genes(
        again, labels, model=tiny_model, output_dir=out, n_trials=2, resume=True, **FAST
    )
    table = again.uns["scgf_finetune_genes"]["search"]
    assert table["number"].tolist() == [0, 1, 2, 3] and len(_study(out).trials) == 4
    best = _study(out).best_trial
    assert _learning_rates(out) == [best.params["learning_rate"]] * 2

    # resume=True without new trials: the stored best setting, every model read back.
    third = adata.copy()
    scgf.tl.finetune_genes(
        third, labels, model=tiny_model, output_dir=out, n_trials=0, resume=True, **FAST
    )
    assert len(third.uns["scgf_finetune_genes"]["search"]) == 4 and len(_study(out).trials) == 4
    assert third.uns["scgf_finetune_genes"]["folds"] == again.uns["scgf_finetune_genes"]["folds"]


def test_a_better_trial_later_retrains_the_folds(tmp_path, tiny_model, task):
    # A first search that cannot learn (lr ~1e-9), then one more trial that can (~5e-3): the
    # fold trained with the first best setting is trained again with the new one.
    adata, labels = task
    out = tmp_path / "out"
    options = {**FAST, "final_model": False}
    for low, resume in ((1e-9, False), (5e-3, True)):
        space = {"learning_rate": (low, 1.1 * low), "num_train_epochs": [1], "seed": [0]}
        scgf.tl.finetune_genes(
            adata,
            labels,
            model=tiny_model,
            output_dir=out,
            n_trials=1,
            resume=resume,
            **{**options, "search_space": space},
        )
        lr = read_metadata(out / "fold_0")["training_arguments"]["learning_rate"]
        assert low <= lr <= 1.1 * low
    values = adata.uns["scgf_finetune_genes"]["search"]["value"].tolist()
    assert values[1] > values[0]
    assert adata.uns["scgf_finetune_genes"]["folds"]["0"]["validation"]["macro_f1"] == values[1]


def test_a_shared_storage_holds_the_study_of_a_lora_search(tmp_path, tiny_model, task):
    # LoRA trials are scored on a merged copy while the adapters go on training.
    adata, labels = task
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    out = tmp_path / "out"
    options = {**FAST, "final_model": False, "lora": {"r": 4, "alpha": 8}}
    scgf.tl.finetune_genes(
        adata, labels, model=tiny_model, output_dir=out, n_trials=1, storage=shared, **options
    )
    assert not (out / "search.db").exists()
    study = optuna.load_study(study_name=STUDY, storage=shared)
    (trial,) = study.trials
    saved = read_metadata(out / "fold_0")
    assert saved["training_arguments"]["learning_rate"] == trial.params["learning_rate"]
    assert saved["lora"]["merged"] and saved["lora"]["r"] == 4
    fold = adata.uns["scgf_finetune_genes"]["folds"]["0"]
    assert fold["validation"]["macro_f1"] == pytest.approx(trial.value, abs=1e-9)
    # the results, trial table included, survive h5ad
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["scgf_finetune_genes"]
    assert back["search"]["value"].tolist() == [trial.value]
    assert back["params"]["search"]["best"]["seed"] == trial.params["seed"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"search_space": {"learning_rat": (1e-5, 1e-3)}}, SearchSpaceError, "not TrainingArg"),
        ({"search_space": {"learning_rate": 1e-3}}, SearchSpaceError, "not a range or list"),
        ({"n_trials": -1}, ValueError, r"n_trials=-1; pass a whole number"),
    ],
)
def test_bad_search_options_fail_before_anything_is_written(
    tmp_path, tiny_model, task, options, error, message
):
    adata, labels = task
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        scgf.tl.finetune_genes(
            adata, labels, model=tiny_model, output_dir=out, **{**FAST, "n_trials": 2, **options}
        )
    assert not out.exists() and "scgf_finetune_genes" not in adata.uns


def test_a_search_without_validation_genes_is_refused(tmp_path, tiny_model, task, monkeypatch):
    # The folds always hold validation genes; a split that had none must not silently search.
    folds = _folds.gene_folds

    def no_validation(*args, **kwargs):
        return [
            _folds.GeneFold(
                f.index, f.train, np.zeros(0, np.int64), np.sort([*f.validation, *f.test])
            )
            for f in folds(*args, **kwargs)
        ]

    monkeypatch.setattr(_folds, "gene_folds", no_validation)
    adata, labels = task
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="by validation macro-F1, but fold 0 has no validation"):
        scgf.tl.finetune_genes(adata, labels, model=tiny_model, output_dir=out, n_trials=1, **FAST)
    assert not out.exists()
