"""``scgf tokenize``: tokenize an ``.h5ad`` file chunk by chunk with bounded memory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ..models._resolve import DEFAULT_MODEL
from ._files import check_input, run_backed, write_whole
from ._options import add_input_output, positive_int


def add_parser(sub) -> None:
    """Register ``tokenize``."""
    tok = sub.add_parser(
        "tokenize", help="tokenize an .h5ad of raw counts, chunk by chunk with bounded memory"
    )
    add_input_output(
        tok, what="raw counts", output="output .h5ad (may equal input to write in place)"
    )
    tok.add_argument("--model", default=DEFAULT_MODEL)
    tok.add_argument("--layer", default=None, help="AnnData layer with raw counts (default X)")
    tok.add_argument("--gene-key", default=None, help="var column with gene IDs or symbols")
    tok.add_argument("--n-counts-key", default="n_counts", help="obs column with totals")
    tok.add_argument("--chunk-size", type=positive_int, default=2048)
    tok.add_argument("--key-added", default=_keys.TOKENS)
    tok.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Tokenize ``args.input`` into ``args.output`` (whole, or not written at all)."""
    from ..pp import tokenize

    source = check_input(args.input)
    options = dict(
        model=args.model,
        layer=args.layer,
        gene_key=args.gene_key,
        n_counts_key=args.n_counts_key,
        chunk_size=args.chunk_size,
        key_added=args.key_added,
    )
    write_whole(source, Path(args.output), lambda work: run_backed(work, tokenize, **options))
    print(f"tokens written to {args.output} (obsm[{args.key_added!r}])")
