"""The ``scgf`` command line: fetch checkpoints; tokenize, embed and perturb ``.h5ad`` files."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from . import models
from ._settings import settings


def _fetch(args: argparse.Namespace) -> None:
    for name in args.names:
        entry = models.lookup(name)
        vocab = entry.vocabulary if entry is not None else name
        if entry is not None and not args.vocabulary_only:
            print(f"{name}: {models.fetch(name)}")
        paths = models.fetch_vocabulary(vocab)
        print(f"{vocab} dictionaries: {Path(next(iter(paths.values()))).parent}")


def _models(args: argparse.Namespace) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(models.list_models().drop(columns=["revision", "folder"]))


def _tokenize(args: argparse.Namespace) -> None:
    import anndata as ad

    from .pp import tokenize

    source, target = Path(args.input), Path(args.output)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    adata = ad.read_h5ad(target, backed="r+")
    try:
        tokenize(
            adata,
            model=args.model,
            layer=args.layer,
            gene_key=args.gene_key,
            n_counts_key=args.n_counts_key,
            chunk_size=args.chunk_size,
            key_added=args.key_added,
        )
    finally:
        adata.file.close()
    print(f"tokens written to {target} (obsm[{args.key_added!r}])")


def _add_model_arguments(parser: argparse.ArgumentParser, *, key_added: str, dtype_help: str):
    """The model-running options ``embed`` and ``perturb`` share."""
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--pooling", choices=["cls", "mean"], default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help=f"float32 or bfloat16 ({dtype_help})")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--key-added", default=key_added)


def _model_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``tl.embed``/``tl.perturb`` from the shared options."""
    from ._engine._distributed import local_device

    return dict(
        model=args.model,
        layer=args.layer,
        pooling=args.pooling,
        device=args.device or local_device(),
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        key_added=args.key_added,
    )


def _embed(args: argparse.Namespace) -> None:
    import anndata as ad

    from ._anndata import PARTIAL_GROUP
    from ._engine._distributed import world
    from .tl import embed

    source, target = Path(args.input), Path(args.output)
    rank, size = world()
    options = dict(genes=args.genes, **_model_options(args))
    if size > 1:  # every process embeds its block of cells; process 0 writes the file
        adata = ad.read_h5ad(source, backed="r")
        embed(adata, **options)
        if rank == 0:
            _write_results(adata, source, target, args.key_added)
            print(f"embeddings written to {target} (obsm[{args.key_added!r}])")
        return
    resuming = target.exists() and _has_group(target, PARTIAL_GROUP)
    if resuming:
        print(f"resuming the interrupted run in {target}")
    elif source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    adata = ad.read_h5ad(target, backed="r+")
    try:
        embed(adata, **options)
    finally:
        adata.file.close()
    print(f"embeddings written to {target} (obsm[{args.key_added!r}])")


def _perturb(args: argparse.Namespace) -> None:
    import anndata as ad

    from ._engine._distributed import world
    from .tl import perturb

    if args.group:
        genes = {}
        for spec in args.group:
            name, _, members = spec.partition("=")
            genes[name] = members.split(",")
    elif args.genes == "all":
        genes = "all"
    else:
        genes = args.genes.split(",")
    states = None
    if args.state_key:
        states = {
            "key": args.state_key,
            "start": args.start_state,
            "goal": args.goal_state,
            "alt": args.alt_state or [],
        }
    rank, _ = world()
    adata = ad.read_h5ad(args.input)
    perturb(
        adata,
        genes,
        perturb_type=args.perturb_type,
        cell_states=states,
        anchor_gene=args.anchor_gene,
        combos=args.combos,
        gene_shifts=args.gene_shifts,
        max_cells=args.max_cells,
        resume=args.resume,
        **_model_options(args),
    )
    if rank == 0:
        adata.write_h5ad(args.output)
        print(f"results written to {args.output} (uns[{args.key_added!r}])")


def _has_group(path: Path, name: str) -> bool:
    import h5py

    with h5py.File(path, "r") as handle:
        return name in handle


def _write_results(adata, source: Path, target: Path, key: str) -> None:
    """Copy ``source`` to ``target`` and add the tokens and embeddings held in ``adata``."""
    import anndata as ad
    import h5py

    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    with h5py.File(target, "r+") as handle:
        for axis, store in (("obsm", adata.obsm), ("varm", adata.varm), ("uns", adata.uns)):
            group = handle.require_group(axis)
            for name, value in store.items():
                if name in group:
                    continue
                ad.io.write_elem(group, name, value)
        if key in adata.obsm:  # always replace the embeddings of this run
            del handle["obsm"][key]
            ad.io.write_elem(handle["obsm"], key, adata.obsm[key])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scgf`` command."""
    parser = argparse.ArgumentParser(prog="scgf", description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download checkpoints and dictionaries into the cache")
    fetch.add_argument("names", nargs="+", help="model names, or gc104M / gc30M")
    fetch.add_argument(
        "--vocabulary-only", action="store_true", help="only the dictionaries, not the weights"
    )
    fetch.set_defaults(func=_fetch)

    listing = sub.add_parser("models", help="list the known checkpoints")
    listing.set_defaults(func=_models)

    tok = sub.add_parser(
        "tokenize", help="tokenize an .h5ad of raw counts, chunk by chunk with bounded memory"
    )
    tok.add_argument("input", help="input .h5ad with raw counts")
    tok.add_argument("output", help="output .h5ad (may equal input to write in place)")
    tok.add_argument("--model", default=models.DEFAULT_MODEL)
    tok.add_argument("--layer", default=None, help="layer with raw counts (default X)")
    tok.add_argument("--gene-key", default=None, help="var column with gene IDs or symbols")
    tok.add_argument("--n-counts-key", default="n_counts", help="obs column with totals")
    tok.add_argument("--chunk-size", type=int, default=2048)
    tok.add_argument("--key-added", default="gf_tokens")
    tok.set_defaults(func=_tokenize)

    emb = sub.add_parser(
        "embed",
        help="embed the cells of an .h5ad (tokenizing first when needed); resumable; "
        "run under torchrun to split the cells across processes",
    )
    emb.add_argument("input", help="input .h5ad with raw counts or tokens")
    emb.add_argument("output", help="output .h5ad (may equal input to write in place)")
    emb.add_argument("--genes", action="store_true", help="also gene embeddings (varm)")
    _add_model_arguments(emb, key_added="X_geneformer", dtype_help="default: bf16 on CUDA")
    emb.set_defaults(func=_embed)

    per = sub.add_parser("perturb", help="in silico perturbation of the cells of an .h5ad")
    per.add_argument("input", help="input .h5ad with raw counts or tokens")
    per.add_argument("output", help="output .h5ad with the results")
    per.add_argument("--genes", default="all", help="'all' or a comma-separated group")
    per.add_argument("--group", action="append", help="NAME=GENE1,GENE2 (repeatable)")
    per.add_argument(
        "--perturb-type", default="delete", choices=["delete", "overexpress", "inhibit", "activate"]
    )
    per.add_argument("--state-key", help="obs column of cell states")
    # Not --start/--goal: torchrun would read an abbreviated --start as its --start-method.
    per.add_argument("--start-state", help="start state (the cells perturbed)")
    per.add_argument("--goal-state", help="goal state")
    per.add_argument("--alt-state", action="append", help="alternative state (repeatable)")
    per.add_argument("--anchor-gene")
    per.add_argument("--combos", action="store_true")
    per.add_argument("--gene-shifts", action="store_true")
    per.add_argument("--max-cells", type=int)
    per.add_argument("--resume", help="folder for checkpoints; rerun to continue")
    _add_model_arguments(per, key_added="scgf_perturb", dtype_help="default: float32")
    per.set_defaults(func=_perturb)
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quiet:
        settings.progress = False
    try:
        args.func(args)
    except (ValueError, KeyError, FileNotFoundError, models.DownloadError) as err:
        print(f"scgf {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
