"""The ``scgf`` command line: fetch checkpoints; tokenize, embed and perturb ``.h5ad`` files.

One module per subcommand (``_fetch``, ``_tokenize``, ``_embed``, ``_perturb``), each with an
``add_parser(sub)`` and a ``run(args)``; shared options live in ``_options``. Building the
parser imports nothing heavy, so ``scgf --help`` is quick; each ``run`` imports what it needs.
"""

from __future__ import annotations

import argparse
import sys

from .. import _logging
from .._settings import settings
from . import _embed, _fetch, _perturb, _tokenize


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scgf`` command."""
    parser = argparse.ArgumentParser(prog="scgf", description=__doc__.splitlines()[0])
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``scgf`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    The exit status: 0 on success, 1 on a user-facing error.
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
    except (ValueError, KeyError, FileNotFoundError, DownloadError) as err:
        print(f"scgf {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
