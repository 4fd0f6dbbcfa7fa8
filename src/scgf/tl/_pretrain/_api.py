"""``scgf.tl.pretrain``: masked-language-model pretraining from scratch or continual."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ... import _keys, _logging
from ...vocab import Vocabulary
from ._errors import OutputDirInUseError

TOKENS_FOLDER = "corpus_tokens"  # on-the-fly tokens of count files, removed on success
# What a previous pretraining run leaves in its output folder (removed by overwrite=True).
RUN_FILES = (
    "fingerprint.json",
    "scgf.json",
    "scgf_vocabulary.json",
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "generation_config.json",
    "training_args.bin",
)


def pretrain(
    corpus,
    *,
    output_dir: str | Path,
    vocab: Vocabulary | str | None = None,
    architecture=None,
    model=None,
    epochs: float = 3,
    max_steps: int | None = None,
    learning_rate: float = 1e-3,
    batch_size: int = 12,
    warmup_steps: float = 0.01,
    weight_decay: float = 0.001,
    lr_scheduler: str = "linear",
    mlm_probability: float = 0.15,
    mask_cls_eos: bool = True,
    eval_fraction: float = 0.01,
    eval_steps: int | None = None,
    save_steps: int | None = None,
    logging_steps: int | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    attention_dropout: float | None = None,
    device: str | None = None,
    tokens_key: str = _keys.TOKENS,
    layer: str | None = None,
    gene_key: str | None = None,
    chunk_size: int = 8192,
    resume: bool = False,
    overwrite: bool = False,
    training_args: dict | None = None,
    callbacks: Sequence[Any] | None = None,
    seed: int = 42,
) -> dict:
    """Pretrain a Geneformer model by masked-language modelling, from scratch or continual.

    From scratch: give ``architecture`` (a published shape such as ``"Geneformer-V1-10M"`` or
    ``"Geneformer-V2-104M"``, or a ``transformers.BertConfig``) and ``vocab``. Continual: give
    ``model`` (a registry name, a local checkpoint folder or a loaded ``BertForMaskedLM``);
    training starts from its weights and keeps its vocabulary.

    The objective is Geneformer's (spec §7): 15 % of the positions are chosen; 80 % of those
    become ``<mask>``, 10 % a random token, 10 % stay; ``<cls>``/``<eos>`` may be chosen like
    any gene, as in the reference (``mask_cls_eos=False`` protects them). Batches group
    cells of similar length and are padded to their longest cell. Unlike the reference, the
    MLM head is applied only at the chosen positions (the same loss and gradients, far less
    work; :class:`scgf._train.MaskedOnlyBertForMaskedLM`).

    Training is ``transformers.Trainer``: run the same call under ``torchrun`` (or
    ``accelerate launch``) to train on several processes; DeepSpeed and FSDP through
    ``training_args``.

    Parameters
    ----------
    corpus
        The cells: an AnnData, an ``.h5ad`` path, a Hugging Face dataset (a
        ``datasets.Dataset`` or a folder saved with ``save_to_disk``, with ``input_ids`` and
        optionally ``length`` columns, as Genecorpus-30M), or a list of these. Tokens under
        ``obsm[tokens_key]`` are used (they must be of the model's vocabulary); raw counts are
        tokenized with it (files chunk by chunk into ``output_dir/corpus_tokens``). Files are
        opened read-only and never changed; nor is an AnnData.
    output_dir
        Where checkpoints and the final model go. The final folder is a standard
        ``BertForMaskedLM`` checkpoint (plus the vocabulary's dictionary files when its
        shape does not name a published vocabulary, and ``scgf.json``): use it as ``model=``
        in every scgf tool.
    vocab
        The vocabulary to train from scratch with: a :class:`~scgf.vocab.Vocabulary` (e.g.
        from :func:`scgf.vocab.build`), ``"V1"``/``"V2"`` or a model whose vocabulary to
        take. A continual run keeps its model's vocabulary (a different one is refused).
    architecture
        From scratch: a published shape (``"Geneformer-V1-10M"``, ``"gf-12L-30M-i2048"``,
        ``"gf-12L-95M-i4096"``, ``"gf-20L-95M-i4096"``, ``"Geneformer-V2-104M"``,
        ``"Geneformer-V2-316M"``), a ``BertConfig`` or a
        dict of its fields. The vocabulary sets ``vocab_size``, ``pad_token_id`` and, for a
        named shape, ``max_position_embeddings`` (its context).
    model
        Continual pretraining: the model to start from.
    epochs
        Passes over the corpus (the reference's V1 and V2 runs: 3).
    max_steps
        Stop after this many optimizer steps (overrides ``epochs``).
    learning_rate, warmup_steps, weight_decay, lr_scheduler
        AdamW settings; ``warmup_steps`` below 1 is a fraction of the steps. Defaults follow
        the reference's V1 run (1e-3, linear, weight decay 0.001) with a 1 % warm-up.
    batch_size
        Cells per batch and process (the reference: 12).
    mlm_probability
        Fraction of positions chosen for prediction.
    mask_cls_eos
        Whether ``<cls>``/``<eos>`` may be chosen (the reference: yes).
    eval_fraction
        Cells held out (at random) to report the masked-token loss and accuracy on (``0``:
        none). Their masks are the same at every evaluation.
    eval_steps
        Evaluate every this many steps; default: at every epoch's end and at the end.
    save_steps
        Save a checkpoint every this many steps (default: every epoch); the last two are kept.
    logging_steps
        Log the training loss every this many steps (default: every epoch's end).
    precision
        ``"fp32"`` or ``"bf16"`` (autocast; on GPUs with bf16 and CPUs with bf16 units).
    attention_dropout
        Dropout on the attention weights while training; ``None`` keeps the architecture's
        or checkpoint's (the V1 shapes': 0.02, V2's: 0.1). On a CPU the dropout runs as the
        fused attention kernel plus a sparse correction; ``0.0`` runs the fused kernel alone
        (about 10 % faster on the V1-10M shape, see ``benchmarks/README.md``) but
        regularises less. The saved model's config holds the value used.
    device
        ``"cpu"`` to train on the CPU although a GPU is present; otherwise Trainer's choice.
    tokens_key, layer, gene_key, chunk_size
        Where tokens are found in AnnData sources; the counts layer, gene-ID column and chunk
        of cells for tokenizing sources without tokens.
    resume
        Continue the run saved in ``output_dir`` from its last checkpoint (refused, naming
        what differs, if it was a run on other data, model or parameters).
    overwrite
        Replace a previous run's files in ``output_dir``.
    training_args
        Further ``transformers.TrainingArguments`` fields (e.g. ``deepspeed``, ``fsdp``,
        ``gradient_accumulation_steps``, ``dataloader_num_workers``).
    callbacks
        ``transformers.TrainerCallback`` objects.
    seed
        Seed of the initialisation, the held-out split, batch order and masking.

    Returns
    -------
    A dict: ``output_dir``, ``n_cells`` (training and held-out), ``global_step``,
    ``train_loss``, ``eval_loss`` and ``eval_accuracy`` (``None`` without held-out cells),
    ``history`` (a ``pandas.DataFrame`` of the logged values).
    """
    import torch
    from transformers import PrinterCallback

    from ..._resume import ResumeMismatchError
    from ..._train import LogCallback, config_overrides, last_checkpoint, training_arguments
    from ..._train._masked_lm import MaskedAccuracy, masked_predictions
    from ._corpus import open_corpus, split_corpus
    from ._masking import EVAL_EPOCH, CellMaskCollator, EpochCallback

    output_dir = Path(output_dir)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}; use 'fp32' or 'bf16'.")
    if overwrite and resume:
        raise ValueError("Pass resume=True (continue) or overwrite=True (start over), not both.")
    overrides = config_overrides(attention_dropout=attention_dropout)  # a bad rate fails here
    start = _model_start(model, architecture, vocab, overrides)
    vocab = start.vocab
    _check_output_dir(output_dir, resume=resume, overwrite=overwrite)

    args = training_arguments(
        output_dir,
        **_arguments(
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            lr_scheduler=lr_scheduler,
            eval_steps=eval_steps if eval_fraction > 0 else None,
            evaluate=eval_fraction > 0,
            save_steps=save_steps,
            logging_steps=logging_steps,
            precision=precision,
            device=device,
            seed=seed,
            extra=training_args or {},
        ),
    )
    _barrier(args)  # every process has checked output_dir before the first writes it
    if overwrite:
        with args.main_process_first(desc="overwrite"):
            if args.process_index == 0:
                _clear_run(output_dir)

    started = _logging.info(f"pretraining {start.describe()} with the {vocab.name} vocabulary")
    with args.main_process_first(desc="corpus"):  # one process tokenizes, the others read
        corpus_data = open_corpus(
            corpus,
            vocab,
            tokens_key=tokens_key,
            layer=layer,
            gene_key=gene_key,
            chunk_size=chunk_size,
            work_dir=output_dir / TOKENS_FOLDER,
        )
    train_set, eval_set = split_corpus(corpus_data, eval_fraction, seed)
    params = {
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "warmup_steps": warmup_steps,
        "weight_decay": weight_decay,
        "lr_scheduler": lr_scheduler,
        "mlm_probability": mlm_probability,
        "mask_cls_eos": mask_cls_eos,
        "eval_fraction": eval_fraction,
        "precision": precision,
        "attention_dropout": None if attention_dropout is None else float(attention_dropout),
        "seed": seed,
        "training_args": training_args or {},
    }
    fingerprint = {
        "corpus": corpus_data.fingerprint(),
        "start": start.fingerprint(),
        "vocabulary": vocab.fingerprint,
        **params,
    }
    with args.main_process_first(desc="fingerprint"):
        try:
            checkpoint = last_checkpoint(output_dir, fingerprint, restart=not resume)
        except ResumeMismatchError as err:
            err.add_note("To start over in this folder, pass overwrite=True (--overwrite).")
            raise
    if resume and checkpoint is None:
        _logging.info("    no checkpoint to resume from in output_dir: starting from the start")
    elif checkpoint is not None:
        _logging.info(f"    resuming from {checkpoint}")

    torch.manual_seed(seed)
    network = start.build()
    masking = dict(mlm_probability=mlm_probability, mask_cls_eos=mask_cls_eos, seed=seed)
    collator = CellMaskCollator(vocab, **masking)
    trainer = _trainer(
        network,
        args,
        train_set,
        eval_set,
        collator,
        CellMaskCollator(vocab, **masking, epoch=EVAL_EPOCH),
        [LogCallback(), EpochCallback(collator), *(callbacks or [])],
        compute_metrics=MaskedAccuracy(),
        preprocess=masked_predictions,
    )
    trainer.remove_callback(PrinterCallback)  # LogCallback logs through scgf instead
    _logging.info(
        f"    {len(train_set)} training cells"
        + (f", {len(eval_set)} held out" if eval_set is not None else "")
        + f"; {network.num_parameters() / 1e6:.2f}M parameters"
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = trainer.evaluate() if eval_set is not None else {}
    trainer.save_model(str(output_dir))
    history = _history(trainer.state.log_history)
    if trainer.is_world_process_zero():
        _save_vocabulary(vocab, network.config, output_dir, start)
        _write_metadata(output_dir, start, vocab, params, corpus_data, metrics, result)
        shutil.rmtree(output_dir / TOKENS_FOLDER, ignore_errors=True)
    _logging.info(f"    finished: model saved in {output_dir}", time=started)
    return {
        "output_dir": output_dir,
        "n_cells": {"train": len(train_set), "eval": 0 if eval_set is None else len(eval_set)},
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "eval_loss": metrics.get("eval_loss"),
        "eval_accuracy": metrics.get("eval_accuracy"),
        "history": history,
    }


# --- the model to start from ----------------------------------------------------------------


class _Start:
    """Where the weights come from: a new model of a shape, or a checkpoint."""

    def __init__(self, vocab: Vocabulary, config=None, record=None, name: str = "", overrides=None):
        self.vocab, self.config, self.record, self.name = vocab, config, record, name
        self.overrides = overrides or {}  # config fields set on the model that is trained

    def describe(self) -> str:
        if self.record is None:
            return f"a new {self.name} model (from scratch)"
        return f"from {self.record.name} (continual)"

    def fingerprint(self) -> dict:
        if self.record is None:
            return {"architecture": self.name, "config": self.config.to_diff_dict()}
        return {"model": self.record.name, **self.record.describe()}

    def build(self):
        from ..._train._masked_lm import MaskedOnlyBertForMaskedLM

        if self.record is None:
            return MaskedOnlyBertForMaskedLM(self._with_overrides(self.config))
        if self.record.model is not None:  # a loaded model: its weights, copied
            network = MaskedOnlyBertForMaskedLM(self._with_overrides(self.record.model.config))
            network.load_state_dict(self.record.model.state_dict())
            return network
        return MaskedOnlyBertForMaskedLM.from_pretrained(str(self.record.folder), **self.overrides)

    def _with_overrides(self, config):
        """A copy of ``config`` with the overrides set (BERT reads them when it is built)."""
        if not self.overrides:
            return config
        from transformers import BertConfig

        return BertConfig.from_dict({**config.to_dict(), **self.overrides})


def _model_start(model, architecture, vocab, overrides: dict) -> _Start:
    from ...models import get_vocabulary, resolve
    from ._architectures import architecture_config

    if (model is None) == (architecture is None):
        raise ValueError(
            "Pass architecture= (with vocab=) to pretrain from scratch, or model= to continue "
            "pretraining a checkpoint, not both or neither."
        )
    if architecture is not None:
        if vocab is None:
            raise ValueError(
                "Pretraining from scratch needs vocab=: a scgf.vocab.Vocabulary (e.g. "
                "scgf.vocab.build(files)), 'V1' or 'V2'."
            )
        vocabulary = get_vocabulary(vocab)
        config = architecture_config(architecture, vocabulary)
        name = architecture if isinstance(architecture, str) else "custom BertConfig"
        return _Start(vocabulary, config=config, name=name, overrides=overrides)
    record = resolve(model)
    if record.task not in ("masked_lm", None):
        raise ValueError(
            f"{record.name} is a {record.task} model; continual pretraining starts from a "
            "pretrained (BertForMaskedLM) checkpoint such as 'Geneformer-V2-104M'."
        )
    if vocab is not None:
        given = get_vocabulary(vocab)
        if given.fingerprint != record.vocabulary.fingerprint:
            raise ValueError(
                f"Continual pretraining keeps the model's vocabulary: {record.name} reads "
                f"{record.vocabulary.name} (fingerprint {record.vocabulary.fingerprint}), not "
                f"{given.name} (fingerprint {given.fingerprint}). Drop vocab=, or pretrain "
                "from scratch with architecture= to use another vocabulary."
            )
    return _Start(record.vocabulary, record=record, name=record.name, overrides=overrides)


# --- output folder --------------------------------------------------------------------------


def _check_output_dir(folder: Path, *, resume: bool, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputDirInUseError(f"output_dir {folder} is a file; give a folder.")
    if resume or overwrite or not folder.is_dir():
        return
    content = sorted(p.name for p in folder.iterdir())
    if content:
        shown = ", ".join(content[:5]) + (" …" if len(content) > 5 else "")
        raise OutputDirInUseError(
            f"output_dir {folder} is in use (it holds {shown}). Pass resume=True to continue "
            "the run saved there, overwrite=True to replace it, or another output_dir."
        )


def _clear_run(folder: Path) -> None:
    """Remove what a previous pretraining run wrote (nothing else)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        run_file = path.name in RUN_FILES or path.suffix == ".pkl"
        if path.is_dir() and (path.name.startswith("checkpoint-") or path.name == TOKENS_FOLDER):
            shutil.rmtree(path)
        elif path.is_file() and run_file:
            path.unlink()


def _barrier(args) -> None:
    import torch

    _ = args.device  # sets up the process group under torchrun
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _save_vocabulary(vocab: Vocabulary, config, folder: Path, start: _Start) -> None:
    """Make ``folder`` resolve to ``vocab``: nothing when the config's shape names the
    published vocabulary; else its dictionary files."""
    from ...models import published_vocabularies
    from ...models._vocabularies import _PUBLISHED_SIZES

    spec = published_vocabularies().get(vocab.name)
    shape = (config.vocab_size, config.max_position_embeddings)
    if spec is not None and shape == (_PUBLISHED_SIZES[vocab.name], spec.context_size):
        return  # resolve() reads the published vocabulary from the config's shape
    vocab.save(folder, overwrite=True)  # scgf's format and the reference's pickles


def _write_metadata(folder, start, vocab, params, corpus_data, metrics, result) -> None:
    from ..._train._saved import write_metadata

    write_metadata(
        folder,
        {
            "pretraining": {
                "from": "scratch" if start.record is None else "continual",
                "architecture": start.name if start.record is None else None,
                "corpus": [s["label"] for s in corpus_data.sources],
                "n_cells": corpus_data.n_cells,
                "global_step": result.global_step,
                "train_loss": result.training_loss,
            },
            "base_model": None if start.record is None else start.record.name,
            "vocabulary": {"name": vocab.name, "fingerprint": vocab.fingerprint},
            "metrics": {"eval": metrics},
            "training_arguments": params,
        },
    )


# --- Trainer ---------------------------------------------------------------------------------


def _arguments(
    *,
    epochs,
    max_steps,
    learning_rate,
    batch_size,
    warmup_steps,
    weight_decay,
    lr_scheduler,
    eval_steps,
    evaluate,
    save_steps,
    logging_steps,
    precision,
    device,
    seed,
    extra,
) -> dict:
    options = dict(
        num_train_epochs=epochs,
        max_steps=-1 if max_steps is None else int(max_steps),
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        lr_scheduler_type=lr_scheduler,
        bf16=precision == "bf16",
        seed=seed,
        batch_eval_metrics=True,
    )
    if device == "cpu":
        options["use_cpu"] = True
    if save_steps is not None:
        options.update(save_strategy="steps", save_steps=save_steps)
    if logging_steps is not None:
        options.update(logging_strategy="steps", logging_steps=logging_steps)
    if evaluate:
        if eval_steps is not None:
            options.update(eval_strategy="steps", eval_steps=eval_steps)
        else:
            options.update(eval_strategy="epoch")
    return {**options, **extra}


def _trainer(network, args, train_set, eval_set, collator, eval_collator, callbacks, **metrics):
    from ._trainer import PretrainTrainer

    return PretrainTrainer(
        model=network,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        eval_data_collator=eval_collator,
        callbacks=callbacks,
        compute_metrics=metrics["compute_metrics"] if eval_set is not None else None,
        preprocess_logits_for_metrics=metrics["preprocess"] if eval_set is not None else None,
    )


def _history(log_history: list[dict]):
    import pandas as pd

    return pd.DataFrame(log_history)
