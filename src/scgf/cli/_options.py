"""Options and helpers the ``scgf`` subcommands share."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..models._resolve import DEFAULT_MODEL
from ._files import read_json_file


def _whole_number(text: str, minimum: int, below: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(below.format(value=value))
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    return _whole_number(text, 1, "{value} must be at least 1")


def fraction(text: str) -> float:
    """An argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def add_attention_dropout_argument(parser: argparse.ArgumentParser) -> None:
    """``--attention-dropout`` of the training commands."""
    parser.add_argument(
        "--attention-dropout",
        type=fraction,
        default=None,
        help="attention dropout while training (default: the model's); 0 is faster on CPUs",
    )


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


def add_model_arguments(
    parser: argparse.ArgumentParser, *, key_added: str, dtype_help: str, pooling: bool = True
):
    """The model-running options ``embed``, ``perturb`` and ``attention`` share."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or local folder")
    parser.add_argument(
        "--emb-layer",
        type=int,
        default=-1,
        help="encoder layer read: -1 second-to-last (default), 0 last, -2 below …",
    )
    if pooling:
        parser.add_argument("--pooling", choices=["cls", "mean"], default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help=f"float32 or bfloat16 ({dtype_help})")
    parser.add_argument("--batch-tokens", type=positive_int, default=None)
    parser.add_argument("--key-added", default=key_added)


def model_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``tl.embed``/``tl.perturb``/``tl.attention`` from the shared
    options (``pooling`` only where the command has it)."""
    from .._engine._distributed import local_device

    pooling = {"pooling": args.pooling} if hasattr(args, "pooling") else {}
    return dict(
        model=args.model,
        emb_layer=args.emb_layer,
        **pooling,
        device=args.device or local_device(),
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        key_added=args.key_added,
    )


def copy_input(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless they are the same file (in-place run)."""
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)


def trial_count(text: str) -> int:
    """An argparse type: a whole number of trials ≥ 0."""
    return _whole_number(text, 0, "{value} trials; give 0 or more")


def add_search_arguments(parser: argparse.ArgumentParser, *, where: str = "") -> None:
    """``--n-trials``, ``--search-space`` and ``--storage`` of the fine-tuning commands."""
    parser.add_argument(
        "--n-trials",
        type=trial_count,
        default=0,
        help=f"hyperparameter search trials {where}before training (study in "
        "OUTPUT_DIR/search.db; --resume adds trials)",
    )
    parser.add_argument(
        "--search-space",
        metavar="FILE.json",
        default=None,
        help='search space: {"arg": [choices] | {"low": a, "high": b, "log": true, '
        '"int": true}} over TrainingArguments (default: the reference\'s)',
    )
    parser.add_argument("--storage", default=None, help="optuna storage URL of the search")


def read_search_space(path: str | Path) -> dict:
    """A search space from JSON: ``[choices]``, or ``{"low", "high"}`` with optional
    ``"log": true`` or ``"int": true``, as :func:`scgf.tl.finetune` and
    :func:`scgf.tl.finetune_genes` take it (lists, ``(low, high)``, ``("log", low, high)``,
    ``("int", low, high)``)."""
    given = read_json_file(path, "search space")
    shape = (
        f'{path} must hold a JSON object {{"argument": [choices] or {{"low": 1e-6, "high": '
        '1e-3, "log": true}, ...}'
    )
    if not isinstance(given, dict):
        raise ValueError(shape + ".")
    space, keys = {}, {"low", "high", "log", "int"}
    for name, spec in given.items():
        if isinstance(spec, list):
            space[name] = spec
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= keys:
            kind = "log" if spec.get("log") else "int" if spec.get("int") else None
            bounds = (spec["low"], spec["high"])
            space[name] = (kind, *bounds) if kind else bounds
        else:
            raise ValueError(shape + f"; {name!r} is {spec!r}.")
    return space
