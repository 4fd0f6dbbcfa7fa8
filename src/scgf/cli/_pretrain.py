"""``scgf pretrain``: masked-language-model pretraining on ``.h5ad`` files or a Hugging Face
dataset, from scratch or continual; resumable; several processes under torchrun."""

from __future__ import annotations

import argparse

from ._options import add_attention_dropout_argument, positive_int


def add_parser(sub) -> None:
    """Register ``pretrain``."""
    pre = sub.add_parser(
        "pretrain",
        help="pretrain a model by masked-language modelling on .h5ad files (or a Hugging Face "
        "dataset), from scratch or continual; run under torchrun for several processes",
    )
    pre.add_argument(
        "corpus",
        nargs="+",
        help=".h5ad files (raw counts or tokens in obsm) or Hugging Face dataset folders",
    )
    pre.add_argument("--output-dir", required=True, help="folder of checkpoints and the model")
    start = pre.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--architecture",
        help="pretrain from scratch with a published shape, e.g. Geneformer-V1-10M",
    )
    start.add_argument("--model", help="continue pretraining this model (name or folder)")
    pre.add_argument(
        "--vocab",
        default=None,
        help="vocabulary to train from scratch with: V1, V2, or a folder with a vocabulary",
    )
    pre.add_argument("--epochs", type=float, default=3.0)
    pre.add_argument("--max-steps", type=positive_int, default=None)
    pre.add_argument("--learning-rate", type=float, default=1e-3)
    pre.add_argument("--batch-size", type=positive_int, default=12, help="cells per process")
    pre.add_argument("--warmup-steps", type=float, default=0.01, help="below 1: a fraction")
    pre.add_argument("--weight-decay", type=float, default=0.001)
    pre.add_argument("--lr-scheduler", default="linear")
    pre.add_argument("--mlm-probability", type=float, default=0.15)
    pre.add_argument(
        "--protect-cls-eos",
        action="store_true",
        help="never mask <cls>/<eos> (the reference may mask them)",
    )
    pre.add_argument("--eval-fraction", type=float, default=0.01, help="cells held out")
    pre.add_argument("--eval-steps", type=positive_int, default=None)
    pre.add_argument("--save-steps", type=positive_int, default=None)
    pre.add_argument("--logging-steps", type=positive_int, default=None)
    pre.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    add_attention_dropout_argument(pre)
    pre.add_argument("--device", choices=["cpu"], default=None, help="train on the CPU")
    pre.add_argument("--layer", default=None, help="layer of raw counts (default X)")
    pre.add_argument("--gene-key", default=None, help="var column of gene IDs")
    pre.add_argument("--seed", type=int, default=42)
    again = pre.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    again.add_argument(
        "--overwrite", action="store_true", help="replace a previous run in --output-dir"
    )
    pre.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Pretrain on ``args.corpus`` into ``args.output_dir``."""
    from pathlib import Path

    from ..tl import pretrain
    from ._files import check_input

    corpus = [entry if Path(entry).is_dir() else check_input(entry) for entry in args.corpus]
    result = pretrain(
        corpus,
        output_dir=args.output_dir,
        vocab=args.vocab,
        architecture=args.architecture,
        model=args.model,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        lr_scheduler=args.lr_scheduler,
        mlm_probability=args.mlm_probability,
        mask_cls_eos=not args.protect_cls_eos,
        eval_fraction=args.eval_fraction,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        precision=args.precision,
        attention_dropout=args.attention_dropout,
        device=args.device,
        layer=args.layer,
        gene_key=args.gene_key,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
    )
    from .._engine._distributed import world

    if world()[0] == 0:
        loss = result["eval_loss"]
        shown = f"; held-out MLM loss {loss:.4f}" if loss is not None else ""
        print(f"model written to {result['output_dir']} ({result['global_step']} steps{shown})")
