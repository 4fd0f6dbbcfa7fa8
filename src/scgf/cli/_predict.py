"""``scgf predict``: class labels and probabilities of the cells of an ``.h5ad`` from a
fine-tuned classifier, chunk by chunk; resumable; splits cells under torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._files import check_input, run_backed, write_resumable, write_whole
from ._options import (
    add_input_output,
    add_resume_arguments,
    apply_checkpoint_interval,
    positive_int,
)


def add_parser(sub) -> None:
    """Register ``predict``."""
    pre = sub.add_parser(
        "predict",
        help="predict cell classes with a fine-tuned classifier (tokenizing first when "
        "needed); resumable; run under torchrun to split the cells across processes",
    )
    add_input_output(
        pre, what="raw counts or tokens", output="output .h5ad (may equal input: in place)"
    )
    pre.add_argument(
        "--model",
        required=True,
        help="fine-tuned classifier: a folder written by scgf finetune, or a registry name",
    )
    pre.add_argument("--device", default=None)
    pre.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    pre.add_argument("--batch-tokens", type=positive_int, default=None)
    pre.add_argument("--chunk-size", type=positive_int, default=8192)
    pre.add_argument("--key-added", default=_keys.PREDICTION)
    add_resume_arguments(pre)
    pre.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Predict the cells of ``args.input`` into ``args.output``, resuming an interrupted run
    there (the output is whole, or not written)."""
    from .._engine._distributed import local_device, world
    from ..tl import predict

    source, target = check_input(args.input), Path(args.output)
    apply_checkpoint_interval(args)
    key = args.key_added
    options = dict(
        model=args.model,
        device=args.device or local_device(),
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        chunk_size=args.chunk_size,
        key_added=key,
        restart=args.restart,
    )
    if world()[1] > 1:
        _run_distributed(source, target, options, key)
        return
    write_resumable(
        source,
        target,
        lambda work: run_backed(work, predict, **options),
        key=key,
        restart=args.restart,
    )
    print(f"predictions written to {target} (obs[{key!r}], obsm['{key}_proba'])")


def _run_distributed(source: Path, target: Path, options: dict, key: str) -> None:
    """Every process predicts its block of cells; process 0 writes the output."""
    import anndata as ad

    from .._engine._distributed import world
    from ..tl import predict

    adata = ad.read_h5ad(source, backed="r")
    try:
        predict(adata, **options)
        if world()[0] != 0:
            return
        write_whole(source, target, lambda work: _write_results(adata, work, key))
    finally:
        adata.file.close()
    print(f"predictions written to {target} (obs[{key!r}], obsm['{key}_proba'])")


def _write_results(adata, path: Path, key: str) -> None:
    """Write the predictions held in ``adata`` (and its tokens, when the file has none) into
    the copy of its file at ``path``."""
    import anndata as ad
    import h5py

    from ..tl._predict import task_keys

    keys = task_keys(key, adata.uns[key]["classes"])
    replaced = {proba_key for _, proba_key in keys.values()}
    with h5py.File(path, "r+") as handle:
        obsm = handle.require_group("obsm")
        for name, value in adata.obsm.items():
            if name in obsm and name in replaced:
                del obsm[name]
            if name not in obsm:  # the tokens made on the way, and this run's probabilities
                ad.io.write_elem(obsm, name, value)
        uns = handle.require_group("uns")
        if key in uns:
            del uns[key]
        ad.io.write_elem(uns, key, adata.uns[key])
        del handle["obs"]
        ad.io.write_elem(handle, "obs", adata.obs)
