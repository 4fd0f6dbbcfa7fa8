"""``scgf embed``: embed the cells of an ``.h5ad``; resumable; splits cells under torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._options import add_input_output, add_model_arguments, copy_input


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
    add_model_arguments(emb, key_added=_keys.EMBEDDING, dtype_help="default: bf16 on CUDA")
    emb.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Embed ``args.input`` into ``args.output``, resuming an interrupted run there."""
    import anndata as ad

    from .._engine._distributed import world
    from ..tl import embed
    from ._options import model_options

    source, target = Path(args.input), Path(args.output)
    rank, size = world()
    options = dict(genes=args.genes, **model_options(args))
    if size > 1:  # every process embeds its block of cells; process 0 writes the file
        adata = ad.read_h5ad(source, backed="r")
        embed(adata, **options)
        if rank == 0:
            _write_results(adata, source, target, args.key_added)
            print(f"embeddings written to {target} (obsm[{args.key_added!r}])")
        return
    resuming = target.exists() and _has_group(target, _keys.PARTIAL_GROUP)
    if resuming:
        print(f"resuming the interrupted run in {target}")
    else:
        copy_input(source, target)
    adata = ad.read_h5ad(target, backed="r+")
    try:
        embed(adata, **options)
    finally:
        adata.file.close()
    print(f"embeddings written to {target} (obsm[{args.key_added!r}])")


def _has_group(path: Path, name: str) -> bool:
    import h5py

    with h5py.File(path, "r") as handle:
        return name in handle


def _write_results(adata, source: Path, target: Path, key: str) -> None:
    """Copy ``source`` to ``target`` and add the tokens and embeddings held in ``adata``."""
    import anndata as ad
    import h5py

    copy_input(source, target)
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
