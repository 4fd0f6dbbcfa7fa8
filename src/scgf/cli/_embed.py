"""``scgf embed``: embed the cells of an ``.h5ad``; resumable; splits cells under torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._files import check_input, run_backed, write_resumable, write_whole
from ._options import (
    add_input_output,
    add_model_arguments,
    add_resume_arguments,
    apply_checkpoint_interval,
    model_options,
)


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
    add_resume_arguments(emb)
    add_model_arguments(emb, key_added=_keys.EMBEDDING, dtype_help="default: bf16 on CUDA")
    emb.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Embed ``args.input`` into ``args.output``, resuming an interrupted run there."""
    from .._engine._distributed import world
    from ..tl import embed

    source, target = check_input(args.input), Path(args.output)
    apply_checkpoint_interval(args)
    options = dict(genes=args.genes, restart=args.restart, **model_options(args))
    _, size = world()
    if size > 1:
        _run_distributed(source, target, options, args.key_added)
        return
    write_resumable(
        source,
        target,
        lambda work: run_backed(work, embed, **options),
        key=args.key_added,
        restart=args.restart,
    )
    print(f"embeddings written to {target} (obsm[{args.key_added!r}])")


def _run_distributed(source: Path, target: Path, options: dict, key: str) -> None:
    """Every process embeds its block of cells; process 0 writes the output."""
    import anndata as ad

    from .._engine._distributed import world
    from ..tl import embed

    adata = ad.read_h5ad(source, backed="r")
    embed(adata, **options)
    if world()[0] != 0:
        return
    write_whole(source, target, lambda work: _write_results(adata, work, key))
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
