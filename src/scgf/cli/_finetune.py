"""``scgf finetune``: fine-tune a model to classify the cells of an ``.h5ad``; torchrun-ready."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .. import _keys
from ..models._resolve import DEFAULT_MODEL
from ._files import check_input, partial_path
from ._options import (
    add_attention_dropout_argument,
    add_search_arguments,
    fraction,
    positive_int,
    read_search_space,
)


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, true/false), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(sub) -> None:
    """Register ``finetune``."""
    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model to classify cells (one or several label columns); run under "
        "torchrun for several GPUs or nodes",
    )
    ft.add_argument("input", help="input .h5ad with raw counts or tokens and the labels in obs")
    ft.add_argument(
        "output",
        nargs="?",
        default=None,
        help="optional output .h5ad, given right after the input: the input plus the split, "
        "held-out predictions and metrics (may equal the input)",
    )
    ft.add_argument(
        "--label-key",
        required=True,
        nargs="+",
        help="obs column(s) of labels (several: multi-task)",
    )
    ft.add_argument("--output-dir", required=True, help="folder of the fine-tuned model")
    ft.add_argument("--model", default=DEFAULT_MODEL, help="model name or local folder")
    split = ft.add_mutually_exclusive_group()
    split.add_argument("--split-key", default=None, help="obs column: train/validation/test")
    split.add_argument("--group-key", default=None, help="obs column of groups held out whole")
    ft.add_argument(
        "--split-sizes",
        nargs=3,
        type=fraction,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VALIDATION", "TEST"),
    )
    ft.add_argument("--random-state", type=int, default=0)
    ft.add_argument("--epochs", type=float, default=10)
    ft.add_argument("--learning-rate", type=float, default=5e-5)
    ft.add_argument("--batch-size", type=positive_int, default=12)
    ft.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=None,
        help="training batches of similar-length cells holding at most this many padded "
        "tokens (cells x longest) instead of --batch-size cells; --batch-size then sets the "
        "evaluation batches",
    )
    ft.add_argument("--weight-decay", type=float, default=0.001)
    add_attention_dropout_argument(ft)
    ft.add_argument("--freeze-layers", type=int, default=0)
    ft.add_argument("--class-weights", choices=["balanced"], default=None)
    ft.add_argument("--early-stopping-patience", type=positive_int, default=None)
    ft.add_argument("--pooling", choices=["cls", "attention"], default="cls")
    ft.add_argument("--lora", action="store_true", help="train LoRA adapters (r 64, alpha 128)")
    ft.add_argument("--lora-r", type=positive_int, default=None, help="LoRA rank (implies --lora)")
    ft.add_argument("--quantize", choices=["4bit"], default=None, help="QLoRA (CUDA only)")
    ft.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    ft.add_argument("--device", default=None, help="'cpu' to train on the CPU")
    add_search_arguments(ft)
    ft.add_argument("--resume", action="store_true", help="continue an interrupted run")
    ft.add_argument("--overwrite", action="store_true", help="replace a previous run")
    ft.add_argument(
        "--training-arg",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a transformers TrainingArguments override (repeatable)",
    )
    ft.add_argument("--key-added", default=_keys.FINETUNE)
    ft.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Fine-tune on ``args.input``; write ``args.output`` (process 0) when given."""
    import anndata as ad

    from .._engine._distributed import local_device
    from ..tl import finetune

    source = check_input(args.input)
    lora: bool | dict = args.lora
    if args.lora_r is not None:
        lora = {"r": args.lora_r, "alpha": 2 * args.lora_r}
    adata = ad.read_h5ad(source)
    label_key = args.label_key[0] if len(args.label_key) == 1 else args.label_key
    try:
        finetune(
            adata,
            label_key,
            output_dir=args.output_dir,
            model=args.model,
            split_key=args.split_key,
            group_key=args.group_key,
            split_sizes=tuple(args.split_sizes),
            random_state=args.random_state,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            batch_tokens=args.batch_tokens,
            weight_decay=args.weight_decay,
            attention_dropout=args.attention_dropout,
            freeze_layers=args.freeze_layers,
            class_weights=args.class_weights,
            early_stopping_patience=args.early_stopping_patience,
            pooling=args.pooling,
            lora=lora,
            quantize=args.quantize,
            precision=args.precision,
            device=args.device or _cpu_if_distributed(local_device()),
            n_trials=args.n_trials,
            search_space=read_search_space(args.search_space) if args.search_space else None,
            storage=args.storage,
            resume=args.resume,
            overwrite=args.overwrite,
            training_args=dict(args.training_arg),
            key_added=args.key_added,
        )
    except KeyboardInterrupt as err:
        err.add_note(
            f"checkpoints are saved in {args.output_dir}: run the same command with --resume "
            "to continue"
        )
        raise
    if int(os.environ.get("RANK", 0)) != 0:
        return
    metrics = adata.uns[args.key_added]["metrics"]
    for task, splits in metrics.items():
        test = splits.get("test") or splits.get("validation") or {}
        if test.get("macro_f1") is not None:
            print(
                f"{task}: held-out macro-F1 {test['macro_f1']:.3f}, accuracy {test['accuracy']:.3f}"
            )
    print(f"model saved in {args.output_dir}")
    if args.output is not None:
        target = Path(args.output)
        partial = partial_path(target)
        adata.write_h5ad(partial)
        os.replace(partial, target)  # whole or absent
        print(f"results written to {target} (obs, uns[{args.key_added!r}])")


def _cpu_if_distributed(device: str | None) -> str | None:
    """Under torchrun the Trainer places each process on its own GPU; without GPUs, the CPU
    (gloo)."""
    if device is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return "cpu"
    return None
