"""Hyperparameter search of scgf.tl.finetune: an optuna study in SQLite that resumes."""

from __future__ import annotations

import optuna
import pytest

import scgf
from scgf._train._saved import read_metadata
from scgf.tl._finetune._search import SearchSpaceError, hp_space
from tests.conftest import needs_data, needs_dicts
from tests.tl._finetune_cases import marker_cells, quick_training, tiny_model

pytestmark = [needs_dicts, needs_data]

SPACE = {"learning_rate": ("log", 1e-4, 1e-2), "num_train_epochs": [1], "seed": ("int", 0, 9)}


@pytest.fixture(autouse=True, scope="module")
def fast():
    yield from quick_training()


def test_search_stores_a_study_that_resumes(tmp_path):
    model = tiny_model(tmp_path / "base")
    adata, _ = marker_cells(model, n_cells=120)
    out = tmp_path / "searched"
    options = dict(model=model, batch_size=16, device="cpu", search_space=SPACE)
    scgf.tl.finetune(adata, "marker", output_dir=out, n_trials=2, **options)
    assert (out / "search.db").is_file() and (out / "model.safetensors").is_file()
    table = adata.uns["scgf_finetune"]["search"]
    assert len(table) == 2 and {"number", "value", "params_learning_rate"} <= set(table.columns)
    study = optuna.load_study(study_name="scgf_finetune", storage=f"sqlite:///{out}/search.db")
    best = study.best_trial
    assert read_metadata(out)["search"]["best"] == best.params
    assert read_metadata(out)["training_arguments"]["learning_rate"] == best.params["learning_rate"]
    assert not (out / "search").exists()  # trial folders removed

    # A second call adds trials to the same study.
    scgf.tl.finetune(adata, "marker", output_dir=out, n_trials=1, resume=True, **options)
    table = adata.uns["scgf_finetune"]["search"]
    assert table["number"].tolist() == [0, 1, 2]
    assert (
        len(
            optuna.load_study(
                study_name="scgf_finetune", storage=f"sqlite:///{out}/search.db"
            ).trials
        )
        == 3
    )

    # Changed choices of a searched parameter are refused before any trial, by name
    # (optuna's own error would come from inside the first trial).
    changed = {**SPACE, "num_train_epochs": [1, 2]}
    with pytest.raises(SearchSpaceError, match=r"search_space\['num_train_epochs'\] lists"):
        scgf.tl.finetune(
            adata, "marker", output_dir=out, n_trials=1, resume=True,
            **{**options, "search_space": changed},
        )  # fmt: skip
    assert len(adata.uns["scgf_finetune"]["search"]) == 3  # the earlier result is kept

    # A shared database given as storage= holds the study instead.
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    other = tmp_path / "other"
    scgf.tl.finetune(adata, "marker", output_dir=other, n_trials=1, storage=shared, **options)
    assert not (other / "search.db").exists()
    assert len(optuna.load_study(study_name="scgf_finetune", storage=shared).trials) == 1


def test_search_space_is_checked_before_any_trial():
    with pytest.raises(SearchSpaceError, match="not TrainingArguments fields"):
        hp_space({"learning_rat": (1e-5, 1e-3)})
    with pytest.raises(SearchSpaceError, match="not a range or list"):
        hp_space({"learning_rate": 1e-3})
    trial = optuna.trial.FixedTrial(
        {
            "num_train_epochs": 1,
            "learning_rate": 1e-4,
            "weight_decay": 0.1,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 500,
            "seed": 7,
        }
    )
    assert hp_space(None)(trial)["lr_scheduler_type"] == "cosine"  # the reference's space
