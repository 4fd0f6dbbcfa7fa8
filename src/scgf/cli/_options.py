"""Options and helpers the ``scgf`` subcommands share."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..models._resolve import DEFAULT_MODEL


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_input_output(parser: argparse.ArgumentParser, *, what: str, output: str) -> None:
    """The ``INPUT OUTPUT`` positional arguments."""
    parser.add_argument("input", help=f"input .h5ad with {what}")
    parser.add_argument("output", help=output)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """``--restart`` and ``--checkpoint-interval`` of the resumable commands."""
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the progress of an interrupted run instead of resuming it",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="save progress at least this often (default 120)",
    )


def apply_checkpoint_interval(args: argparse.Namespace) -> None:
    """Set ``scgf.settings.checkpoint_interval`` from ``--checkpoint-interval`` when given."""
    from .._settings import settings

    if args.checkpoint_interval is not None:
        settings.checkpoint_interval = args.checkpoint_interval


def add_model_arguments(parser: argparse.ArgumentParser, *, key_added: str, dtype_help: str):
    """The model-running options ``embed`` and ``perturb`` share."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or local folder")
    parser.add_argument(
        "--emb-layer",
        type=int,
        default=-1,
        help="encoder layer read: -1 second-to-last (default), 0 last, -2 below …",
    )
    parser.add_argument("--pooling", choices=["cls", "mean"], default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help=f"float32 or bfloat16 ({dtype_help})")
    parser.add_argument("--batch-tokens", type=positive_int, default=None)
    parser.add_argument("--key-added", default=key_added)


def model_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``tl.embed``/``tl.perturb`` from the shared options."""
    from .._engine._distributed import local_device

    return dict(
        model=args.model,
        emb_layer=args.emb_layer,
        pooling=args.pooling,
        device=args.device or local_device(),
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        key_added=args.key_added,
    )


def copy_input(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless they are the same file (in-place run)."""
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
