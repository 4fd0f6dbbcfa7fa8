"""The ``scgf`` command line: fetch checkpoints; tokenize, embed, perturb, fine-tune, predict,
pretrain, evaluate and read attention with ``.h5ad`` files.

One module per subcommand (``_fetch``, ``_tokenize``, ``_embed``, ``_perturb``, ``_finetune``,
``_predict``, ``_genes``, ``_pretrain``, ``_build_vocab``, ``_evaluate``, ``_attention``), each
with an ``add_parser(sub)`` and a ``run(args)``; shared options live in ``_options``. Building
the parser imports nothing heavy, so ``scgf --help`` is quick; each ``run`` imports what it
needs.
"""

from __future__ import annotations

import argparse
import sys

from .. import _logging
from .._settings import settings
from . import (
    _attention,
    _build_vocab,
    _embed,
    _evaluate,
    _fetch,
    _finetune,
    _genes,
    _perturb,
    _predict,
    _pretrain,
    _tokenize,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scgf`` command."""
    parser = argparse.ArgumentParser(
        prog="scgf", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    parser.add_argument(
        "--verbosity",
        default=None,
        choices=list(_logging.VERBOSITY_LEVELS),
        help="how much to log (default: info)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _fetch.add_parsers(sub)
    _tokenize.add_parser(sub)
    _embed.add_parser(sub)
    _perturb.add_parser(sub)
    _finetune.add_parser(sub)
    _predict.add_parser(sub)
    _genes.add_parser(sub)
    _pretrain.add_parser(sub)
    _build_vocab.add_parser(sub)
    _evaluate.add_parser(sub)
    _attention.add_parser(sub)
    return parser


# Errors that mean the input, the options or the environment need fixing (not a bug in scgf):
# one line on stderr and exit status 2, never a traceback.
USER_ERRORS = (ValueError, KeyError, OSError, ImportError)
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def _message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    notes = getattr(err, "__notes__", [])
    return "\n".join([str(text), *notes]) if text else "\n".join(notes)


def main(argv: list[str] | None = None) -> int:
    """Run the ``scgf`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    The exit status: 0 on success, 2 on a user-facing error (one line saying what was wrong
    and what to do), 130 when interrupted (saying where the run can be resumed from).
    """
    from ..models import DownloadError

    args = build_parser().parse_args(argv)
    if args.quiet:
        settings.progress = False
        settings.verbosity = "warning"
    if args.verbosity is not None:
        settings.verbosity = args.verbosity
    try:
        args.func(args)
    except KeyboardInterrupt as err:
        note = _message(err)
        print(f"scgf {args.command}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (*USER_ERRORS, DownloadError) as err:
        print(f"scgf {args.command}: error: {_message(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":  # torch.cuda's; a bug otherwise
            raise
        print(
            f"scgf {args.command}: error: the GPU ran out of memory even for a batch of one "
            f"cell ({_message(err).splitlines()[0]}). Use a GPU with more memory, "
            "--dtype bfloat16, a smaller model, or --device cpu.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return 0
