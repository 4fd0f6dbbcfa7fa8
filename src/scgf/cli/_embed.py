"""``scgf embed``: embed the cells of an ``.h5ad``; resumable; splits cells under torchrun."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .. import _keys
from ._files import PartialOutput, check_input, has_progress, partial_path
from ._options import add_input_output, add_model_arguments


def add_parser(sub) -> None:
    """Register ``embed``."""
    emb = sub.add_parser(
        "embed",
        help="embed the cells of an .h5ad (tokenizing first when needed); resumable; "
        "run under torchrun to split the cells across processes",
    )
    add_input_output(
        emb, what="raw counts or tokens", output="output .h5ad (may equal input: in place)"
    )
    emb.add_argument("--genes", action="store_true", help="also gene embeddings (varm)")
    emb.add_argument(
        "--restart",
        action="store_true",
        help="discard the progress of an interrupted run instead of resuming it",
    )
    emb.add_argument(
        "--checkpoint-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="save progress at least this often (default 120)",
    )
    add_model_arguments(emb, key_added=_keys.EMBEDDING, dtype_help="default: bf16 on CUDA")
    emb.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Embed ``args.input`` into ``args.output``, resuming an interrupted run there."""
    from .._engine._distributed import world
    from .._resume import ResumeMismatchError
    from .._settings import settings
    from ..tl._embedding_store import progress_folder
    from ._options import model_options

    source, target = check_input(args.input), Path(args.output)
    if args.checkpoint_interval is not None:
        settings.checkpoint_interval = args.checkpoint_interval
    options = dict(genes=args.genes, restart=args.restart, **model_options(args))
    _, size = world()
    if size > 1:
        _run_distributed(source, target, options, args.key_added)
        return
    if args.restart:
        partial_path(target).unlink(missing_ok=True)
        shutil.rmtree(progress_folder(partial_path(target), args.key_added), ignore_errors=True)
    output = PartialOutput(source, target, resumable=True)
    work = output.open()
    if output.resuming:
        print(f"resuming the interrupted run in {work}")
    try:
        _embed_file(work, options)
    except BaseException as err:
        keep = has_progress(progress_folder(work, args.key_added))
        output.abandon(keep=keep)
        if keep and not isinstance(err, ResumeMismatchError):
            err.add_note(f"progress is saved in {work}: run the same command again to resume")
        raise
    output.commit()
    print(f"embeddings written to {target} (obsm[{args.key_added!r}])")


def _embed_file(path: Path, options: dict) -> None:
    import anndata as ad

    from ..tl import embed

    adata = ad.read_h5ad(path, backed="r+")
    try:
        embed(adata, **options)
    finally:
        adata.file.close()


def _run_distributed(source: Path, target: Path, options: dict, key: str) -> None:
    """Every process embeds its block of cells; process 0 writes the output."""
    import anndata as ad

    from .._engine._distributed import world
    from ..tl import embed

    adata = ad.read_h5ad(source, backed="r")
    embed(adata, **options)
    if world()[0] != 0:
        return
    output = PartialOutput(source, target, resumable=False)
    work = output.open()
    try:
        _write_results(adata, work, key)
    except BaseException:
        output.abandon(keep=False)
        raise
    output.commit()
    print(f"embeddings written to {target} (obsm[{key!r}])")


def _write_results(adata, path: Path, key: str) -> None:
    """Add the tokens and embeddings held in ``adata`` to the copy of its file at ``path``."""
    import anndata as ad
    import h5py

    with h5py.File(path, "r+") as handle:
        for axis, store in (("obsm", adata.obsm), ("varm", adata.varm), ("uns", adata.uns)):
            group = handle.require_group(axis)
            for name, value in store.items():
                if name in group:
                    continue
                ad.io.write_elem(group, name, value)
        if key in adata.obsm:  # always replace the embeddings of this run
            del handle["obsm"][key]
            ad.io.write_elem(handle["obsm"], key, adata.obsm[key])
