"""``scgf evaluate``: score the embeddings of an ``.h5ad`` against PCA baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _keys
from ._files import check_input, check_output_folder, write_adata
from ._options import positive_int


def add_parser(sub) -> None:
    """Register ``evaluate``."""
    ev = sub.add_parser(
        "evaluate",
        help="score embeddings (obsm) against PCA baselines with scib-metrics and label "
        "transfer; prints the table",
    )
    ev.add_argument("input", help="input .h5ad with labels, embeddings and raw counts")
    ev.add_argument(
        "output", nargs="?", help="output .h5ad with the results and baselines (optional)"
    )
    ev.add_argument("--label-key", required=True, help="obs column of cell labels")
    ev.add_argument("--batch-key", help="obs column of batches (adds batch metrics)")
    ev.add_argument(
        "--reps",
        nargs="+",
        metavar="KEY",
        help="obsm keys to score (default: X_geneformer*, X_pca_hvg, X_pca_unintegrated)",
    )
    ev.add_argument("--layer", help="layer of raw counts instead of X")
    ev.add_argument("--table", metavar="CSV", help="also write the long results table here")
    ev.add_argument("--n-seeds", type=positive_int, default=3, help="probe splits (default 3)")
    ev.add_argument("--n-comps", type=positive_int, default=50, help="baseline PCs (default 50)")
    ev.add_argument(
        "--skip-metrics",
        nargs="+",
        default=[],
        metavar="NAME",
        help="scib-metrics metrics to leave out (e.g. kbet_per_label), or probe",
    )
    ev.add_argument(
        "--on-mismatch",
        choices=["skip", "score", "raise"],
        default="skip",
        help="embeddings failing the provenance check: skip (default), score, raise",
    )
    ev.add_argument("--key-added", default=_keys.EVALUATE)
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Evaluate ``args.input``; print the table; write ``args.output``/``args.table``."""
    import anndata as ad
    import pandas as pd

    from ..get import evaluation_df
    from ..tl import evaluate

    source = check_input(args.input)
    target = Path(args.output) if args.output else None
    check_output_folder(target, Path(args.table) if args.table else None)
    adata = ad.read_h5ad(source)
    evaluate(
        adata,
        args.label_key,
        batch_key=args.batch_key,
        reps=args.reps,
        layer=args.layer,
        n_comps=args.n_comps,
        n_seeds=args.n_seeds,
        skip_metrics=args.skip_metrics,
        on_mismatch=args.on_mismatch,
        key_added=args.key_added,
    )
    with pd.option_context("display.width", 200, "display.max_columns", None):
        wide = evaluation_df(adata, key=args.key_added, wide=True)
        wide.columns = [metric for _, metric in wide.columns]
        print(wide.round(3).to_string())
    if args.table:
        evaluation_df(adata, key=args.key_added).to_csv(args.table, index=False)
        print(f"results table written to {args.table}")
    if target is not None:
        write_adata(adata, target)
        print(f"results written to {target} (uns[{args.key_added!r}])")
