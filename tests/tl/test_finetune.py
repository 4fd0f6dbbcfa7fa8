"""scgf.tl.finetune on a constructed task with a known answer (is a marker gene among a real
cell's top-ranked genes?), the saved folder in plain transformers, resuming, bad input."""

from __future__ import annotations

import copy
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback

import scgf
from scgf._resume import ResumeMismatchError
from scgf._train._saved import read_metadata
from tests.conftest import needs_data, needs_dicts
from tests.tl._finetune_cases import marker_cells, quick_training, tiny_model, truncate

pytestmark = [needs_dicts, needs_data]

# Settings under which the tiny model learns the marker task (measured: macro-F1 1.0).
LEARN = dict(epochs=6, batch_size=16, learning_rate=1e-3, device="cpu", early_stopping_patience=2)


@pytest.fixture(autouse=True, scope="module")
def fast():
    yield from quick_training()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def cells(model_dir):
    adata, _ = marker_cells(model_dir)
    return adata


class KeepModel(TrainerCallback):
    """Keeps a copy of the model the Trainer ends with (the best epoch's)."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = copy.deepcopy(model).eval()


@pytest.fixture(scope="module")
def trained(cells, model_dir, tmp_path_factory):
    adata = cells.copy()
    unlabelled = adata.obs_names[:10]
    adata.obs["marker"] = adata.obs["marker"].astype(object)
    adata.obs.loc[unlabelled, "marker"] = np.nan
    out = tmp_path_factory.mktemp("trained") / "model"
    keep = KeepModel()
    with pytest.warns(UserWarning, match="10 of 700 cells have no label in obs\\['marker'\\]"):
        scgf.tl.finetune(
            adata, "marker", model=model_dir, output_dir=out, callbacks=[keep], **LEARN
        )
    return adata, out, keep.model


def test_learns_the_known_answer(trained):
    adata = trained[0]
    result = adata.uns["scgf_finetune"]
    test = result["metrics"]["marker"]["test"]
    assert (
        test["macro_f1"] >= 0.95 and result["metrics"]["marker"]["validation"]["macro_f1"] >= 0.95
    )
    assert test["n"] == 69 and np.sum(test["confusion"]) == 69
    assert test["roc_auc"] >= 0.95 and len(test["roc"]["fpr"]) == 100
    # splits: 80/10/10 of the 690 labelled cells; the 10 unlabelled cells are in none
    split = adata.obs["scgf_split"]
    assert split.value_counts().to_dict() == {"train": 552, "validation": 69, "test": 69}
    assert split.iloc[:10].isna().all()
    # held-out predictions equal the truth where the model is right, NaN elsewhere
    held = split.isin(["validation", "test"]).to_numpy()
    predicted = adata.obs["scgf_pred"]
    assert predicted[~held].isna().all() and predicted[held].notna().all()
    assert (predicted[held] == adata.obs["marker"][held]).mean() >= 0.95
    history = result["history"]
    assert {"epoch", "step", "train_loss", "eval_loss", "eval_macro_f1"} <= set(history.columns)
    assert history["eval_macro_f1"].max() >= 0.95
    assert result["tasks"] == {"marker": ["high", "low"]}
    assert result["params"]["label_key"] == ["marker"]


def test_shifted_labels_are_not_learnable(cells, model_dir, tmp_path):
    # The same cells with every label moved to the next cell: nothing links tokens and
    # labels, so the held-out score stays near chance. A test that passed this too would
    # not show learning.
    adata = cells.copy()
    adata.obs["marker"] = np.roll(adata.obs["marker"].to_numpy(), 1)
    scgf.tl.finetune(adata, "marker", model=model_dir, output_dir=tmp_path / "m", **LEARN)
    assert adata.uns["scgf_finetune"]["metrics"]["marker"]["test"]["macro_f1"] < 0.75


def test_saved_folder_is_a_plain_transformers_classifier(trained):
    adata, out, model = trained
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert plain.config.id2label == {0: "high", 1: "low"}
    assert plain.config.label2id == {"high": 0, "low": 1}
    tokens = adata.obsm["gf_tokens"]
    ids = [tokens[i].data[np.argsort(tokens[i].indices)] for i in range(40)]
    batch = torch.nn.utils.rnn.pad_sequence(
        [torch.from_numpy(x).long() for x in ids], batch_first=True
    )
    mask = (batch != 0).long()
    with torch.no_grad():
        expected = model(input_ids=batch, attention_mask=mask).logits
        actual = plain(input_ids=batch, attention_mask=mask).logits
    assert torch.allclose(actual, expected, atol=1e-6, rtol=0)
    predicted = np.array(["high", "low"])[actual.argmax(-1).numpy()]
    held = adata.obs["scgf_split"].iloc[:40].isin(["validation", "test"]).to_numpy()
    assert (adata.obs["scgf_pred"].iloc[:40].to_numpy()[held] == predicted[held]).all()
    meta = read_metadata(out)
    assert meta["task"] == "cell_classification"
    assert meta["tasks"] == {"marker": ["high", "low"]}
    assert (
        meta["metrics"]["test"]["macro_f1"]
        == adata.uns["scgf_finetune"]["metrics"]["marker"]["test"]["macro_f1"]
    )
    assert (
        meta["vocabulary"]["fingerprint"]
        == adata.uns["gf_tokens"]["params"]["vocabulary_fingerprint"]
    )
    assert meta["tokenization"]["vocabulary"] == "gc104M"
    assert meta["training_arguments"]["learning_rate"] == 1e-3
    record = scgf.models.resolve(out)
    assert record.task == "cell_classification" and record.labels == ("high", "low")
    assert record.vocabulary.fingerprint == meta["vocabulary"]["fingerprint"]
    assert not list(out.glob("checkpoint-*"))  # removed once the model is saved


def test_results_survive_write_h5ad(trained, tmp_path):
    adata, _, _ = trained
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    before, after = adata.uns["scgf_finetune"], back.uns["scgf_finetune"]
    pd.testing.assert_frame_equal(before["history"], after["history"])
    test_before, test_after = (
        before["metrics"]["marker"]["test"],
        after["metrics"]["marker"]["test"],
    )
    assert test_after["macro_f1"] == test_before["macro_f1"]
    np.testing.assert_array_equal(test_after["confusion"], test_before["confusion"])
    np.testing.assert_allclose(test_after["roc"]["tpr"], test_before["roc"]["tpr"])
    assert back.obs["scgf_split"].equals(adata.obs["scgf_split"])
    assert back.obs["scgf_pred"].astype(str).equals(adata.obs["scgf_pred"].astype(str))


class Interrupt(TrainerCallback):
    """Stops training like Ctrl-C right after the checkpoint of step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def run_interrupted(adata, options, tmp_path, stop_step: int, checks=None):
    """Fine-tune ``adata`` whole (``tmp_path/whole``), and interrupted at ``stop_step`` then
    resumed (``tmp_path/cut``, ``checks(interrupted)`` run before resuming); asserts equal
    final weights; returns the resumed AnnData and the steps the resumed run trained."""
    scgf.tl.finetune(adata.copy(), "marker", output_dir=tmp_path / "whole", **options)
    interrupted = adata.copy()
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.finetune(
            interrupted,
            "marker",
            output_dir=tmp_path / "cut",
            callbacks=[Interrupt(stop_step)],
            **options,
        )
    if checks is not None:
        checks(interrupted)
    counter = CountSteps()
    scgf.tl.finetune(
        interrupted,
        "marker",
        output_dir=tmp_path / "cut",
        resume=True,
        callbacks=[counter],
        **options,
    )
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "cut" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=0)
    return interrupted, counter.steps


# checkpoints and evaluations every 3 steps, for the interrupted runs
EVERY_3_STEPS = {
    "save_strategy": "steps",
    "save_steps": 3,
    "eval_strategy": "steps",
    "eval_steps": 3,
}


def test_resume_gives_the_same_final_weights(cells, model_dir, tmp_path):
    adata = cells[:160].copy()
    options = dict(
        model=model_dir,
        epochs=2,
        batch_size=16,
        learning_rate=3e-3,
        device="cpu",
        training_args={**EVERY_3_STEPS, "logging_strategy": "steps", "logging_steps": 3},
    )

    def refused(interrupted):
        assert "scgf_finetune" not in interrupted.uns and "scgf_split" not in interrupted.obs
        assert (tmp_path / "cut" / "checkpoint-9").is_dir()
        with pytest.raises(FileExistsError, match="is not empty"):
            scgf.tl.finetune(interrupted, "marker", output_dir=tmp_path / "cut", **options)
        with pytest.raises(ResumeMismatchError, match="learning_rate"):
            other = {**options, "learning_rate": 1e-3}
            scgf.tl.finetune(
                interrupted, "marker", output_dir=tmp_path / "cut", resume=True, **other
            )

    interrupted, resumed_steps = run_interrupted(adata, options, tmp_path, 9, refused)
    assert resumed_steps == 16 - 9  # continued, not started over
    steps = interrupted.uns["scgf_finetune"]["history"]["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == 16  # 2 epochs × 8 batches of 16
    with pytest.raises(FileExistsError, match="is finished"):
        scgf.tl.finetune(interrupted, "marker", output_dir=tmp_path / "cut", resume=True, **options)


def test_resume_with_token_budget_batches(cells, model_dir, tmp_path):
    from scgf._train._trainer import token_budget_sizes

    adata = cells[:160].copy()
    # cells of 8-26 tokens: batches of 6 long to 20 short cells within 160 tokens
    tops = np.random.default_rng(0).integers(6, 25, adata.n_obs)
    adata.obsm["gf_tokens"] = truncate(adata.obsm["gf_tokens"].tocsr(), tops)
    options = dict(
        model=model_dir,
        epochs=2,
        batch_tokens=160,
        learning_rate=3e-3,
        device="cpu",
        training_args=EVERY_3_STEPS,
    )
    interrupted, resumed_steps = run_interrupted(adata, options, tmp_path, 21)
    train = (interrupted.obs["scgf_split"] == "train").to_numpy()
    lengths = np.diff(adata.obsm["gf_tokens"].tocsr().indptr)[train]
    per_epoch = len(token_budget_sizes(lengths, 160))
    assert 8 < per_epoch < 20  # neither 12-cell batches nor one cell per batch
    steps = interrupted.uns["scgf_finetune"]["history"]["step"].max()
    assert steps == 2 * per_epoch and resumed_steps == steps - 21  # resumed in the 2nd epoch
    assert interrupted.uns["scgf_finetune"]["params"]["batch_tokens"] == 160
    assert read_metadata(tmp_path / "cut")["training_arguments"]["batch_tokens"] == 160
    # another budget is another training: resuming checks it
    assert (
        json.loads((tmp_path / "cut" / "fingerprint.json").read_text())["params"]["batch_tokens"]
        == 160
    )


def test_attention_dropout_override(cells, tmp_path):
    # a base model with 50 % attention dropout: training turns it off, the saved config
    # says so, and two runs with the same seed give the same weights
    base = tiny_model(tmp_path / "base", attention_dropout=0.5)
    adata = cells[:120].copy()
    options = dict(model=base, epochs=1, batch_size=16, learning_rate=3e-3, device="cpu")
    kept = [KeepModel(), KeepModel()]
    for run, keep in enumerate(kept):
        scgf.tl.finetune(
            adata.copy(),
            "marker",
            output_dir=tmp_path / f"off{run}",
            attention_dropout=0.0,
            callbacks=[keep],
            **options,
        )
    assert all(layer.attention.self.dropout.p == 0.0 for layer in kept[0].model.bert.encoder.layer)
    config = json.loads((tmp_path / "off0" / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.0
    assert json.loads((base / "config.json").read_text())["attention_probs_dropout_prob"] == 0.5
    meta = read_metadata(tmp_path / "off0")
    assert meta["training_arguments"]["attention_dropout"] == 0.0
    first = load_file(tmp_path / "off0" / "model.safetensors")
    second = load_file(tmp_path / "off1" / "model.safetensors")
    for name in first:
        torch.testing.assert_close(second[name], first[name], atol=0, rtol=0)
    # the checkpoint's 50 % dropout (None) trains other weights from the same seed
    scgf.tl.finetune(adata.copy(), "marker", output_dir=tmp_path / "kept", **options)
    kept_dropout = load_file(tmp_path / "kept" / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert (kept_dropout[name] - first[name]).abs().max() > 1e-4
    config = json.loads((tmp_path / "kept" / "config.json").read_text())
    assert config["attention_probs_dropout_prob"] == 0.5
    with pytest.raises(ValueError, match="attention_dropout=1.5"):
        scgf.tl.finetune(
            adata, "marker", output_dir=tmp_path / "x", attention_dropout=1.5, **options
        )
    assert not (tmp_path / "x").exists()


def unchanged(adata):
    return (
        list(adata.obs.columns),
        sorted(adata.uns.keys()),
        sorted(adata.obsm.keys()),
        adata.obs.copy(),
    )


def assert_unchanged(adata, before):
    columns, uns, obsm, obs = before
    assert list(adata.obs.columns) == columns
    assert sorted(adata.uns.keys()) == uns and sorted(adata.obsm.keys()) == obsm
    pd.testing.assert_frame_equal(adata.obs, obs)


@pytest.mark.parametrize(
    ("edit", "options", "error", "match"),
    [
        (None, {"label_key": "cell_typ"}, KeyError, "no label column 'cell_typ'"),
        ("rare", {}, ValueError, r"too few cells to split: 'rare' \(2 cells\)"),
        ("one_class", {}, ValueError, "has only the class 'high'"),
        ("v1_tokens", {}, ValueError, "holds V1 tokens of the gc30M vocabulary"),
        ("full_dir", {}, FileExistsError, "is not empty"),
        (None, {"quantize": "4bit"}, ValueError, "needs a CUDA GPU"),
        (None, {"split_sizes": (0.5, 0.2, 0.2)}, ValueError, "summing to 1"),
        ("bad_split", {"split_key": "split"}, ValueError, r"holds \['training'\]"),
    ],
)
def test_bad_input_leaves_adata_unchanged(cells, model_dir, tmp_path, edit, options, error, match):
    adata = cells[:120].copy()
    if edit == "rare":
        adata.obs["marker"] = adata.obs["marker"].astype(str)
        adata.obs.iloc[:2, adata.obs.columns.get_loc("marker")] = "rare"
    elif edit == "one_class":
        adata.obs["marker"] = "high"
    elif edit == "v1_tokens":
        params = adata.uns["gf_tokens"]["params"]
        params.update(vocabulary="gc30M", version="V1", vocabulary_fingerprint="0" * 16)
    elif edit == "full_dir":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "notes.txt").write_text("mine")
    elif edit == "bad_split":
        adata.obs["split"] = "training"
    before = unchanged(adata)
    kwargs = {"label_key": "marker", **options}
    with pytest.raises(error, match=match):
        scgf.tl.finetune(adata, output_dir=tmp_path / "out", model=model_dir, **kwargs)
    assert_unchanged(adata, before)
    if edit == "full_dir":
        assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
        with pytest.raises(FileExistsError, match="did not write"):
            scgf.tl.finetune(
                adata, output_dir=tmp_path / "out", model=model_dir, overwrite=True, **kwargs
            )


def test_tokenizes_on_the_fly_and_multitask_lora(model_dir, tmp_path):
    adata = ad.read_h5ad(scgf_data("pbmc68k_reduced_counts"))[:150].copy()
    adata.obs["big"] = np.where(adata.obs["n_counts"] > adata.obs["n_counts"].median(), "y", "n")
    adata.obs["phase2"] = adata.obs["phase"].astype(str)
    given = np.array(["train"] * 90 + ["validation"] * 30 + ["test"] * 25 + [None] * 5, object)
    adata.obs["given"] = np.random.default_rng(0).permutation(given)
    out = tmp_path / "mt"
    scgf.tl.finetune(
        adata,
        ["big", "phase2"],
        model=model_dir,
        output_dir=out,
        epochs=1,
        batch_size=16,
        device="cpu",
        lora={"r": 4, "alpha": 8},
        pooling="attention",
        class_weights="balanced",
        split_key="given",
        attention_dropout=0.25,
    )
    assert "gf_tokens" in adata.obsm and "gf_tokens" in adata.uns  # tokenized on the fly
    result = adata.uns["scgf_finetune"]
    assert set(result["metrics"]) == {"big", "phase2"}
    split = adata.obs["scgf_split"].astype(object).where(adata.obs["scgf_split"].notna(), None)
    assert split.tolist() == adata.obs["given"].tolist()  # split_key honoured
    for task in ("big", "phase2"):
        assert result["metrics"][task]["test"]["n"] == 25
        held = adata.obs["scgf_split"].isin(["validation", "test"])
        assert adata.obs[f"scgf_pred_{task}"][held].notna().all()
    meta = read_metadata(out)
    assert meta["task"] == "multitask_cell_classification"
    assert meta["lora"]["r"] == 4 and (out / "adapter_config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["scgf_tasks"]["big"] == ["n", "y"] and config["scgf_pooling"] == "attention"
    assert config["attention_probs_dropout_prob"] == 0.25  # the base model's is 0


def scgf_data(name):
    from tests.conftest import DATA

    return DATA / f"{name}.h5ad"
