"""``scgf fetch`` and ``scgf models``: the checkpoint cache and the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
    """Register ``fetch`` and ``models``."""
    fetch = sub.add_parser("fetch", help="download checkpoints and dictionaries into the cache")
    fetch.add_argument("names", nargs="+", help="model names, or gc104M / gc30M")
    fetch.add_argument(
        "--vocabulary-only", action="store_true", help="only the dictionaries, not the weights"
    )
    fetch.set_defaults(func=run_fetch)

    listing = sub.add_parser("models", help="list the known checkpoints")
    listing.set_defaults(func=run_models)


def run_fetch(args: argparse.Namespace) -> None:
    """Download each named checkpoint (unless ``--vocabulary-only``) and its dictionaries."""
    from .. import models

    for name in args.names:
        entry = models.lookup(name)
        vocab = entry.vocabulary if entry is not None else name
        if entry is not None and not args.vocabulary_only:
            print(f"{name}: {models.fetch(name)}")
        paths = models.fetch_vocabulary(vocab)
        print(f"{vocab} dictionaries: {Path(next(iter(paths.values()))).parent}")


def run_models(args: argparse.Namespace) -> None:
    """Print the registry."""
    import pandas as pd

    from .. import models

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(models.list_models().drop(columns=["revision", "folder"]))
