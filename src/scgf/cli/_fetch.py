"""``scgf fetch`` and ``scgf models``: the checkpoint cache and the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
    """Register ``fetch`` and ``models``."""
    fetch = sub.add_parser("fetch", help="download checkpoints and dictionaries into the cache")
    fetch.add_argument(
        "names",
        nargs="+",
        help="model names (see `scgf models`), or gc104M / gc30M for dictionaries",
    )
    fetch.add_argument(
        "--vocabulary-only", action="store_true", help="only the dictionaries, not the weights"
    )
    fetch.set_defaults(func=run_fetch)

    listing = sub.add_parser("models", help="list the known checkpoints")
    listing.set_defaults(func=run_models)


def run_fetch(args: argparse.Namespace) -> None:
    """Download each named checkpoint (unless ``--vocabulary-only``) and its dictionaries.

    Every name is checked before anything is downloaded, so a typo in the last name does not
    come to light only after the first model's weights.
    """
    from .. import models
    from ..models._fetch import unknown_model
    from ..models._vocabularies import VOCABULARY_NAMES

    plan = []
    for name in args.names:
        entry = models.lookup(name)
        if entry is not None:
            plan.append((name, entry.vocabulary, not args.vocabulary_only))
        elif name in VOCABULARY_NAMES:
            plan.append((name, VOCABULARY_NAMES[name], False))
        else:
            # Not a vocabulary either: say the model is unknown, not the vocabulary.
            raise unknown_model(name, vocabularies=True)
    fetched: set[str] = set()
    for name, vocab, weights in plan:
        if weights:
            print(f"{name}: {models.fetch(name)}")
        if vocab not in fetched:
            paths = models.fetch_vocabulary(vocab)
            print(f"{vocab} dictionaries: {Path(next(iter(paths.values()))).parent}")
            fetched.add(vocab)


def run_models(args: argparse.Namespace) -> None:
    """Print the registry."""
    import pandas as pd

    from .. import models

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(models.list_models().drop(columns=["revision", "folder"]))
