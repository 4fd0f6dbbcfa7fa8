"""One gene-classifier training on ``scgf._train``, its evaluation through the inference
runner, and its saved folder (a transformers token-classification folder + ``scgf.json``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..._train import LengthGroupedTrainer
from ..._train._data import IGNORE_INDEX
from ._aggregate import GeneProbabilities

CHECKPOINTS = "checkpoints"


@dataclass
class TrainingPlan:
    """What every training of one ``finetune_genes`` call shares."""

    record: object  # scgf.models.ModelRecord of the base model
    classes: tuple[str, ...]
    device: torch.device
    epochs: float = 1
    learning_rate: float = 5e-5
    batch_size: int = 12
    freeze_layers: int = 0
    lora: dict | None = None
    random_state: int = 0
    precision: str = "fp32"
    attention_dropout: float | None = None
    callbacks: list = field(default_factory=list)
    training_args: dict = field(default_factory=dict)

    @property
    def vocab(self):
        return self.record.vocabulary

    def arguments(self) -> dict:
        """The non-default training arguments, as recorded in ``scgf.json``."""
        return {
            "num_train_epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "per_device_train_batch_size": self.batch_size,
            "seed": self.random_state,
            "precision": self.precision,
            "attention_dropout": self.attention_dropout,
            **self.training_args,
        }


def base_model(plan: TrainingPlan):
    """``BertForTokenClassification`` initialised from the base checkpoint (a fresh head),
    with the first ``freeze_layers`` encoder layers frozen and, optionally, LoRA adapters."""
    from transformers import BertForTokenClassification
    from transformers.utils import logging as hf_logging

    from ..._train import config_overrides

    classes = list(plan.classes)
    labels = dict(
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    labels.update(config_overrides(attention_dropout=plan.attention_dropout))
    record = plan.record
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier weights": on purpose
    hf_logging.disable_progress_bar()
    try:
        if record.kind == "loaded":
            model = BertForTokenClassification(_config_with(record.model.config, labels))
            missing = model.bert.load_state_dict(_encoder_state(record.model), strict=False)
            if missing.missing_keys:
                raise ValueError(
                    f"{record.name} lacks encoder weights {missing.missing_keys[:3]}: pass a "
                    "Geneformer BertForMaskedLM, a fine-tuned classifier or a BertModel."
                )
        else:
            model = BertForTokenClassification.from_pretrained(
                str(record.folder), attn_implementation="sdpa", **labels
            )
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not 0 <= plan.freeze_layers <= model.config.num_hidden_layers:
        raise ValueError(
            f"freeze_layers={plan.freeze_layers}; the model has "
            f"{model.config.num_hidden_layers} encoder layers."
        )
    for layer in model.bert.encoder.layer[: plan.freeze_layers]:
        layer.requires_grad_(False)
    if plan.lora is not None:
        from ..._train._lora import apply_lora

        model = apply_lora(model, task="gene_classification", **plan.lora)
    return model


def _config_with(config, labels: dict):
    from transformers import BertConfig

    out = BertConfig.from_dict({**config.to_dict(), **labels})
    out._attn_implementation = "sdpa"
    return out


def _encoder_state(model) -> dict:
    from ..._engine._loading import encoder_of

    return encoder_of(model).state_dict()


def model_init(plan: TrainingPlan, trial=None):
    """``Trainer(model_init=...)``: a fresh :func:`base_model` at every (re)start, built after
    the Trainer has seeded from ``args.seed`` (so a trial and the training that repeats its
    setting start from the same head)."""
    return base_model(plan)


def arguments(plan: TrainingPlan, folder: Path, **overrides):
    """The ``TrainingArguments`` of a training in ``folder``: the plan's settings (the
    reference's gene-classifier defaults), its ``training_args``, then ``overrides``."""
    from ..._train import training_arguments

    options = dict(
        per_device_train_batch_size=plan.batch_size,
        per_device_eval_batch_size=plan.batch_size,
        learning_rate=plan.learning_rate,
        num_train_epochs=plan.epochs,
        weight_decay=0.001,  # the reference's default
        seed=plan.random_state,
        eval_strategy="no",
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device.type == "cpu",
    )
    return training_arguments(folder, **{**options, **plan.training_args, **overrides})


class GeneTrainer(LengthGroupedTrainer):
    """``LengthGroupedTrainer`` whose ``evaluate()`` is ``evaluator(model)``: per-gene metrics
    (probabilities averaged over the cells expressing each gene), not the Trainer's per-token
    loop, so a hyperparameter search optimises the metric the folds report."""

    def __init__(self, *args, evaluator: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluator = evaluator

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if self.evaluator is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluator(self.model).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


def gene_trainer(
    plan: TrainingPlan,
    tokens: sp.csr_matrix,
    token_labels: np.ndarray,
    args,
    *,
    callbacks: list | None = None,
    eval_labels: np.ndarray | None = None,
    evaluator: Callable | None = None,
) -> GeneTrainer:
    """A Trainer of fresh classifiers (``model_init``) on the cells holding any token that
    ``token_labels`` labels; ``eval_labels`` and ``evaluator`` give it an evaluation."""
    from transformers import PrinterCallback

    from ..._train import LogCallback, TokenClassificationCollator, TokenDataset

    trainer = GeneTrainer(
        model_init=partial(model_init, plan),
        args=args,
        train_dataset=TokenDataset(tokens, token_labels=token_labels),
        eval_dataset=None
        if eval_labels is None
        else TokenDataset(tokens, token_labels=eval_labels),
        data_collator=TokenClassificationCollator(pad_id=plan.vocab.pad_id),
        callbacks=[LogCallback(), *(callbacks or [])],
        evaluator=evaluator,
    )
    trainer.remove_callback(PrinterCallback)  # LogCallback logs through scgf instead
    return trainer


def train(
    plan: TrainingPlan,
    tokens: sp.csr_matrix,
    token_labels: np.ndarray,
    folder: Path,
    *,
    fingerprint: dict,
    resume: bool,
    restart_if_changed: bool = False,
):
    """Train a fresh classifier on the tokens labelled by ``token_labels`` (indexed by token
    id, negative = ``-100``) in the cells that hold any of them; checkpoints under
    ``folder/checkpoints`` (resumed from with ``resume``; with ``restart_if_changed``, the
    checkpoints of another setting are discarded instead of refused). Returns the trained
    model, LoRA merged, in evaluation mode."""
    from ..._logging import debug
    from ..._resume import ResumeMismatchError
    from ..._train import last_checkpoint

    checkpoints = folder / CHECKPOINTS
    try:
        checkpoint = last_checkpoint(checkpoints, fingerprint, restart=not resume)
    except ResumeMismatchError:
        if not restart_if_changed:
            raise
        # A search's best setting changed since this training began: start it over.
        shutil.rmtree(checkpoints, ignore_errors=True)
        checkpoint = last_checkpoint(checkpoints, fingerprint, restart=True)
    trainer = gene_trainer(
        plan, tokens, token_labels, arguments(plan, checkpoints), callbacks=plan.callbacks
    )
    debug(
        f"    training on {len(trainer.train_dataset)} cells"
        + (f" from {checkpoint}" if checkpoint else "")
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # checkpoint writing; the Trainer has its own bar
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        hf_logging.enable_progress_bar()
    return merged(trainer.model, plan).eval()


def merged(model, plan: TrainingPlan):
    """The model with its LoRA adapters merged into the weights (itself without LoRA)."""
    return model.merge_and_unload() if plan.lora is not None else model


def probabilities(
    model,
    plan: TrainingPlan,
    tokens: sp.csr_matrix,
    *,
    keep_tokens: np.ndarray | None = None,
    token_budget: int | None = None,
) -> GeneProbabilities:
    """Run ``model`` over ``tokens`` with the inference runner (fp32, length-sorted token
    batches) and average each gene's per-token probabilities over the cells holding it."""
    from ..._engine import Logits, Runner, load_model

    loaded = load_model(model, device=plan.device, head=True, vocabulary=plan.vocab)
    runner = Runner(loaded, Logits(loaded), token_budget=token_budget)
    out = GeneProbabilities(
        int(model.config.vocab_size),
        len(plan.classes),
        special_tokens=plan.vocab.special_tokens,
        keep_tokens=keep_tokens,
        device=plan.device,
    )
    for batch in runner.run(tokens):
        out.add(batch.output, batch.input_ids, batch.lengths)
    return out


def cells_with(tokens: sp.csr_matrix, wanted: np.ndarray, vocab_size: int) -> np.ndarray:
    """Rows of ``tokens`` that hold any of the token ids ``wanted``."""
    hit = np.zeros(vocab_size, dtype=bool)
    hit[wanted] = True
    inside = tokens.data < vocab_size
    found = np.zeros(len(tokens.data), dtype=bool)
    found[inside] = hit[tokens.data[inside].astype(np.int64)]
    rows = np.repeat(np.arange(tokens.shape[0]), np.diff(tokens.indptr))
    return np.unique(rows[found])


def save(model, plan: TrainingPlan, folder: Path, metadata: dict) -> None:
    """Write ``model`` as a transformers folder with ``scgf.json``; the base model's own
    dictionary files are copied in so that the folder resolves to the same vocabulary; the
    training checkpoints are removed."""
    from transformers.utils import logging as hf_logging

    from ..._train._saved import write_metadata
    from ...vocab._vocabulary import find_dictionary_files

    folder.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        hf_logging.enable_progress_bar()
    source = plan.record.folder
    if source is not None:
        for path in (find_dictionary_files(source) or {}).values():
            shutil.copyfile(path, folder / path.name)
    write_metadata(folder, metadata)
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)


def label_array(tokens: np.ndarray, labels: np.ndarray, vocab_size: int) -> np.ndarray:
    """Array indexed by token id: ``labels`` at ``tokens``, ``-100`` elsewhere."""
    out = np.full(vocab_size, IGNORE_INDEX, dtype=np.int64)
    out[np.asarray(tokens, dtype=np.int64)] = labels
    return out
