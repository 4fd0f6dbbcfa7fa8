"""``scgf build-vocab``: gene medians and token ids from ``.h5ad`` files, saved as a vocabulary."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._files import check_input
from ._options import positive_int


def add_parser(sub) -> None:
    """Register ``build-vocab``."""
    cmd = sub.add_parser(
        "build-vocab",
        help="build a vocabulary (gene medians, token ids) from .h5ad files of raw counts",
        description=(
            "Compute each gene's median non-zero normalised expression over the files (read "
            "chunk by chunk, never modified) and write a vocabulary: scgf_vocabulary.json and "
            "the reference's four dictionary pickles."
        ),
    )
    cmd.add_argument("inputs", nargs="+", metavar="FILE", help="input .h5ad files of raw counts")
    cmd.add_argument("--output", "-o", required=True, help="folder to write the vocabulary into")
    cmd.add_argument("--version", choices=["V2", "V1"], default="V2", help="special-token layout")
    cmd.add_argument("--method", choices=["exact", "tdigest"], default="exact")
    cmd.add_argument("--compression", type=float, default=100, help="t-digest compression")
    cmd.add_argument("--gene-key", default=None, help="var column with Ensembl IDs")
    cmd.add_argument("--symbol-key", default=None, help="var column with gene symbols")
    cmd.add_argument(
        "--gene-mapping",
        default=None,
        help="map symbols and retired IDs through this vocabulary's mapping (e.g. V2)",
    )
    cmd.add_argument("--layer", default=None, help="AnnData layer with raw counts (default X)")
    cmd.add_argument("--n-counts-key", default="n_counts", help="obs column with totals")
    cmd.add_argument("--min-cells", type=positive_int, default=10)
    cmd.add_argument("--context-size", type=positive_int, default=None)
    cmd.add_argument("--name", default="custom", help="vocabulary name (in the file names)")
    cmd.add_argument(
        "--format", choices=["both", "scgf", "pickle"], default="both", help="files to write"
    )
    cmd.add_argument("--chunk-size", type=positive_int, default=4096)
    cmd.add_argument(
        "--overwrite", action="store_true", help="replace a vocabulary already in --output"
    )
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Build the vocabulary of ``args.inputs`` and save it into ``args.output``."""
    from ..vocab import build
    from ..vocab._vocabulary import vocabulary_files

    inputs = [check_input(path) for path in args.inputs]
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"--output {output} is a file; give a folder.")
    existing = vocabulary_files(output)
    if existing and not args.overwrite:  # checked before the corpus is read
        raise FileExistsError(
            f"--output {output} already holds a vocabulary "
            f"({', '.join(p.name for p in existing)}). Choose another folder, or pass "
            "--overwrite to replace it."
        )
    vocab = build(
        inputs,
        version=args.version,
        gene_key=args.gene_key,
        symbol_key=args.symbol_key,
        gene_mapping=args.gene_mapping,
        layer=args.layer,
        n_counts_key=args.n_counts_key,
        method=args.method,
        compression=args.compression,
        min_cells=args.min_cells,
        context_size=args.context_size,
        name=args.name,
        chunk_size=args.chunk_size,
    )
    written = vocab.save(output, format=args.format, overwrite=args.overwrite)
    print(
        f"vocabulary {vocab.name!r} ({vocab.version}, {vocab.n_genes} genes, fingerprint "
        f"{vocab.fingerprint}) written to {output}: {', '.join(p.name for p in written)}"
    )
