"""``scgf finetune-genes`` and ``scgf predict-genes``: gene classification of ``.h5ad`` files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import _keys
from ._files import check_input, partial_path, read_json_file
from ._options import (
    add_attention_dropout_argument,
    add_search_arguments,
    positive_int,
    read_search_space,
)


def add_parser(sub) -> None:
    """Register ``finetune-genes`` and ``predict-genes``."""
    fin = sub.add_parser(
        "finetune-genes",
        help="fine-tune a gene classifier on labelled genes, cross-validated over genes",
    )
    fin.add_argument("input", help="input .h5ad with raw counts or tokens")
    labels = fin.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--genes",
        metavar="FILE.json",
        help='gene labels: a JSON object {"class": ["GENE", ...], ...} (symbols or Ensembl IDs)',
    )
    labels.add_argument("--var-key", help="var column of gene classes (empty = unlabelled)")
    fin.add_argument("--output-dir", required=True, help="folder for the models")
    fin.add_argument(
        "--output", metavar="OUT.h5ad", help="also write the cells with the results (uns)"
    )
    fin.add_argument("--model", default=_default_model(), help="pretrained model name or folder")
    fin.add_argument("--n-folds", type=positive_int, default=5)
    fin.add_argument(
        "--max-folds", type=positive_int, default=None, help="run only the first folds"
    )
    fin.add_argument("--balance", action="store_true", help="balance a binary task's genes")
    fin.add_argument(
        "--no-final-model", action="store_true", help="skip the model trained on all genes"
    )
    fin.add_argument("--epochs", type=float, default=1)
    fin.add_argument("--learning-rate", type=float, default=5e-5)
    fin.add_argument("--batch-size", type=positive_int, default=12)
    fin.add_argument("--freeze-layers", type=int, default=0)
    fin.add_argument("--lora", action="store_true", help="train LoRA adapters (merged on save)")
    fin.add_argument("--seed", type=int, default=0, help="random_state (folds, training)")
    fin.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16"], default=None, help="training precision"
    )
    add_attention_dropout_argument(fin)
    fin.add_argument("--device", default=None)
    add_search_arguments(fin, where="on the first fold ")
    fin.add_argument("--resume", action="store_true", help="continue a run in --output-dir")
    fin.add_argument("--overwrite", action="store_true", help="replace --output-dir")
    fin.add_argument("--key-added", default=_keys.FINETUNE_GENES)
    fin.set_defaults(func=run_finetune)

    pre = sub.add_parser(
        "predict-genes",
        help="predict the class of every expressed gene with a gene classifier",
    )
    pre.add_argument("input", help="input .h5ad with raw counts or tokens")
    pre.add_argument("output", help="output .h5ad (may equal input: in place)")
    pre.add_argument(
        "--model", required=True, help="gene classifier: a folder written by finetune-genes"
    )
    pre.add_argument("--device", default=None)
    pre.add_argument("--dtype", default=None, help="float32 (default) or bfloat16")
    pre.add_argument("--batch-tokens", type=positive_int, default=None)
    pre.add_argument("--key-added", default=_keys.GENE_PRED)
    pre.set_defaults(func=run_predict)


def _default_model() -> str:
    from ..models._resolve import DEFAULT_MODEL

    return DEFAULT_MODEL


def read_gene_labels(path: str | Path) -> dict[str, list[str]]:
    """``{class: [genes]}`` from a JSON file, checked to be that shape."""
    labels = read_json_file(path, "gene label")
    if not isinstance(labels, dict) or not all(
        isinstance(genes, list) and all(isinstance(g, str) for g in genes)
        for genes in labels.values()
    ):
        raise ValueError(
            f'{path} must hold a JSON object of gene lists: {{"class": ["GENE", ...], ...}}.'
        )
    return labels


def _write(adata, target: Path) -> None:
    partial = partial_path(target)
    adata.write_h5ad(partial)
    os.replace(partial, target)


def run_finetune(args: argparse.Namespace) -> None:
    """Fine-tune on ``args.input``; the models go to ``--output-dir``."""
    import anndata as ad

    from ..tl import finetune_genes

    source = check_input(args.input)
    labels = read_gene_labels(args.genes) if args.genes else None
    space = read_search_space(args.search_space) if args.search_space else None
    target = Path(args.output) if args.output else None
    if target is not None and not target.parent.is_dir():
        raise FileNotFoundError(f"The output folder {target.parent} does not exist.")
    adata = ad.read_h5ad(source)
    finetune_genes(
        adata,
        labels,
        var_key=args.var_key,
        model=args.model,
        output_dir=args.output_dir,
        n_folds=args.n_folds,
        max_folds=args.max_folds,
        balance=args.balance,
        final_model=not args.no_final_model,
        random_state=args.seed,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        freeze_layers=args.freeze_layers,
        lora=args.lora,
        precision=args.precision,
        attention_dropout=args.attention_dropout,
        device=args.device,
        n_trials=args.n_trials,
        search_space=space,
        storage=args.storage,
        resume=args.resume,
        overwrite=args.overwrite,
        key_added=args.key_added,
    )
    metrics = adata.uns[args.key_added]["metrics"]
    summary = ", ".join(f"{m} {v['mean']:.3f} ± {v['sd']:.3f}" for m, v in metrics.items())
    print(f"cross-validated over genes: {summary}; models in {args.output_dir}")
    best = adata.uns[args.key_added]["params"].get("search", {}).get("best")
    if best:
        print(f"trained with the search's best setting: {best}")
    if target is not None:
        _write(adata, target)
        print(f"results written to {target} (uns[{args.key_added!r}])")


def run_predict(args: argparse.Namespace) -> None:
    """Predict the genes of ``args.input`` into ``args.output`` (whole, or not written)."""
    import anndata as ad

    from ..tl import predict_genes

    source, target = check_input(args.input), Path(args.output)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"The output folder {target.parent} does not exist.")
    adata = ad.read_h5ad(source)
    predict_genes(
        adata,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        key_added=args.key_added,
    )
    _write(adata, target)
    key = args.key_added
    print(f"gene predictions written to {target} (var[{key!r}], varm['{key}_proba'])")
