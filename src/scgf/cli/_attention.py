"""``scgf attention``: a model's attention per cell and between genes, for an ``.h5ad``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._files import check_input, check_output_folder, write_adata
from ._options import add_input_output, add_model_arguments, positive_int


def add_parser(sub) -> None:
    """Register ``attention``."""
    att = sub.add_parser(
        "attention",
        help="per-cell attention (layers) and gene-pair attention (varp) of an .h5ad; run "
        "under torchrun to split the cells across processes",
    )
    add_input_output(att, what="raw counts or tokens", output="output .h5ad")
    att.add_argument(
        "--heads",
        nargs="+",
        default=["mean"],
        metavar="HEAD",
        help="'mean' over all heads (default), 'all' (also one layer per head), or head "
        "numbers to average",
    )
    att.add_argument(
        "--no-gene-pairs",
        dest="gene_pairs",
        action="store_false",
        help="only the per-cell attention (skips the full attention matrix per cell)",
    )
    att.add_argument("--top-k", type=positive_int, default=50, help="genes kept per gene")
    att.add_argument(
        "--min-cells", type=positive_int, default=3, help="cells a gene pair needs (default 3)"
    )
    add_model_arguments(
        att, key_added=_keys.ATTENTION, dtype_help="default: bf16 on CUDA", pooling=False
    )
    att.set_defaults(func=run)


def heads_argument(values: list[str]) -> str | list[int]:
    """``--heads`` as ``tl.attention`` takes it: ``"mean"``, ``"all"`` or head numbers."""
    if len(values) == 1 and values[0] in ("mean", "all"):
        return values[0]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(
            f"--heads {' '.join(values)}: give 'mean', 'all', or head numbers (e.g. --heads 0 3)."
        ) from None


def run(args: argparse.Namespace) -> None:
    """Read the attention of ``args.input``'s cells; process 0 writes ``args.output``."""
    import anndata as ad

    from .._engine._distributed import world
    from ..tl import attention
    from ._options import model_options

    source, target = check_input(args.input), Path(args.output)
    check_output_folder(target)
    heads = heads_argument(args.heads)
    options = model_options(args)
    adata = ad.read_h5ad(source)
    attention(
        adata,
        heads=heads,
        gene_pairs=args.gene_pairs,
        top_k=args.top_k,
        min_cells=args.min_cells,
        **options,
    )
    if world()[0] == 0:
        write_adata(adata, target)
        where = f"layers[{args.key_added!r}]" + (
            f", varp[{args.key_added!r}]" if args.gene_pairs else ""
        )
        print(f"attention written to {target} ({where}, uns[{args.key_added!r}])")
