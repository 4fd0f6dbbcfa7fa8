"""Gene-classifier training throughput and quality: scgf.tl.finetune_genes versus the
reference's way, on the same CPU, cells, genes and fold, in one run.

Run: ``python -m benchmarks.gene_classifier_speed [--cells 600] [--epochs 2]
[--shape Geneformer-V1-10M]`` (``--quick`` for a smoke run).

Cells are real (``pbmc_sorted_zheng2017_3100``, a random sample of the cells with at most
``--max-tokens`` tokens, 1024 by default: the reference's fp32 batches of 12 cells of 2048
tokens need more memory than the development machine has free), tokenized with the real
dictionaries, so their lengths are real. No pretrained weights are reachable here, so a
random model of the named checkpoint's shape is trained, on a constructed gene task it can
learn from scratch: 2 × 40 genes that no sampled cell expresses are placed, 8 of each class
per cell, alternately at the first 16 gene positions of every cell (class "first" at the
first, third, … gene position, "second" at the second, fourth, …), before the cell's own
genes. A gene's class is thus
visible at its token through its position, and held-out genes can be classified. Both arms
train fold 0 of the same 5-fold split over genes (only its training genes labelled) with the
same hyperparameters, and both trained models are evaluated the same way (scgf's per-gene
averaging through the inference runner, fp32), per gene and per token.

Arms:

- ``reference``: the reference gene classifier's training (spec §6.3): a plain
  ``transformers.Trainer`` with ``BertForTokenClassification``, batches of 12 in random order
  right-padded to the batch's longest cell, fp32, weight decay 0.001, no evaluation;
- ``scgf``: ``scgf.tl.finetune_genes`` (``max_folds=1``): length-grouped batches of 12, fp32,
  the model's 2 % attention dropout (on CPU through :mod:`scgf._train._cpu_attention`: the
  fused attention kernel plus a sparse dropout correction, where PyTorch's own dropout takes
  the unfused path);
- ``scgf-bf16``: the same with ``precision="bf16"`` (autocast; pays on CPUs with AMX/AVX-512
  bf16 units, and on GPUs);
- ``scgf, attention dropout 0`` and ``scgf-bf16, attention dropout 0``: with
  ``attention_dropout=0.0`` (the fused kernel alone: what the dropout still costs);
- ``…, N-token batches``: the same with token-budget batches (``batch_tokens``, 12 × the
  mean cell length: about the steps per epoch of batches of 12, with more short cells or
  fewer long ones per batch).

Training cells/s count training epochs only (a Trainer callback times each epoch), the cells
being those that hold any training gene (every sampled cell here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

from benchmarks._data import SHARED, add_dictionaries, training_timer
from benchmarks.embed_speed import SHAPES, random_model

SOURCE = SHARED / "data" / "pbmc_sorted_zheng2017_3100.h5ad"
N_GENES, SLOTS = 40, 8


def prepare(workdir: Path, n_cells: int, shape_name: str, max_tokens: int):
    """Sampled real cells with the constructed genes inserted, the random model, the labels."""
    import scgf
    from scgf.pp._rank_encoding import tokens_to_csr

    real = ad.read_h5ad(SOURCE)
    shape = SHAPES[shape_name]
    model = workdir / "model"
    random_model(shape, str(model))
    add_dictionaries(model, shape["version"])
    scgf.settings.progress = False
    scgf.pp.tokenize(real, model=str(model), gene_key="ensembl_id")
    rng = np.random.default_rng(0)
    short = np.flatnonzero(np.diff(real.obsm["gf_tokens"].indptr) + 2 * SLOTS <= max_tokens)
    adata = real[np.sort(rng.choice(short, n_cells, replace=False))].copy()
    vocab = scgf.models.get_vocabulary(str(model))
    cells = scgf.get.tokens(adata)
    present = np.unique(np.concatenate(cells))
    genes = np.array([vocab.token_ids[g] for g in vocab.gene_ids[:3000]])
    pool = np.setdiff1d(genes, present)
    odd, even = pool[:N_GENES], pool[N_GENES : 2 * N_GENES]
    special = vocab.special_tokens
    rows = []
    for cell in cells:
        body = cell[1:-1] if special else cell
        inserted = np.stack(
            [rng.choice(odd, SLOTS, replace=False), rng.choice(even, SLOTS, replace=False)], 1
        ).ravel()
        seq = np.concatenate([inserted, body])[: vocab.max_genes]
        rows.append(np.concatenate([[vocab.cls_id], seq, [vocab.eos_id]]) if special else seq)
    lengths = np.array([len(r) for r in rows])
    adata.obsm["gf_tokens"] = tokens_to_csr(
        lengths, np.concatenate(rows).astype(np.int32), vocab.context_size
    )
    labels = {"first": list(vocab.id_of_token[odd]), "second": list(vocab.id_of_token[even])}
    return adata, labels, model


def run_scgf(
    adata, labels, model, workdir, args, precision, attention_dropout=None, batch_tokens=None
) -> dict:
    import scgf

    data = adata.copy()
    timer = training_timer()
    scgf.tl.finetune_genes(
        data,
        labels,
        model=str(model),
        output_dir=workdir / f"scgf_{precision}_{attention_dropout}_{batch_tokens}",
        batch_tokens=batch_tokens,
        n_folds=5,
        max_folds=1,
        final_model=False,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        precision=precision,
        attention_dropout=attention_dropout,
        device="cpu",
        callbacks=[timer],
        # the reference arm's settings: no warm-up (scgf's default for 6-layer models is the
        # reference's 500 steps, more than a benchmark run has)
        training_args=dict(save_strategy="no", logging_strategy="no", warmup_steps=0),
    )
    fold = data.uns["scgf_finetune_genes"]["folds"]["0"]
    return {"train_seconds": timer.seconds, "fold": fold}


def run_reference(adata, labels, model, workdir, args) -> dict:
    import torch
    from transformers import BertForTokenClassification, Trainer, TrainingArguments

    import scgf
    from scgf._engine import resolve_device
    from scgf._train import TokenClassificationCollator, TokenDataset
    from scgf._train._metrics import classification_metrics
    from scgf.models import resolve
    from scgf.tl._genes._folds import gene_folds
    from scgf.tl._genes._labels import labels_from_dict
    from scgf.tl._genes._training import TrainingPlan, cells_with, label_array, probabilities

    record = resolve(str(model))
    vocab = record.vocabulary
    genes = labels_from_dict(labels, vocab)
    fold = gene_folds(genes.labels, 5, random_state=0)[0]
    tokens = scgf.get.token_matrix(adata)
    size = int(record.config["vocab_size"])
    train_labels = label_array(genes.tokens[fold.train], genes.labels[fold.train], size)
    torch.manual_seed(0)
    net = BertForTokenClassification.from_pretrained(
        str(model),
        num_labels=2,
        id2label=dict(enumerate(genes.classes)),
        label2id={c: i for i, c in enumerate(genes.classes)},
    )
    training = TrainingArguments(
        output_dir=str(workdir / "reference"),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=12,
        weight_decay=0.001,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        train_sampling_strategy="random",  # the reference: group_by_length=False
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
    )
    timer = training_timer()
    Trainer(
        model=net,
        args=training,
        train_dataset=TokenDataset(tokens, token_labels=train_labels),
        data_collator=TokenClassificationCollator(pad_id=vocab.pad_id),
        callbacks=[timer],
    ).train()
    plan = TrainingPlan(record=record, classes=genes.classes, device=resolve_device("cpu"))
    held = np.concatenate([fold.validation, fold.test])
    rows = cells_with(tokens, genes.tokens[held], size)
    acc = probabilities(net.eval(), plan, tokens[rows], keep_tokens=genes.tokens[fold.test])
    proba, _ = acc.mean()
    test = genes.tokens[fold.test]
    result = classification_metrics(genes.labels[fold.test], proba[test], genes.classes)
    occ_tokens, occ_proba = acc.occurrences()
    result["token_level"] = classification_metrics(
        genes.class_of(occ_tokens), occ_proba, genes.classes
    )
    return {"train_seconds": timer.seconds, "fold": result}


def main() -> None:
    import torch

    import scgf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--shape", default="Geneformer-V1-10M", choices=SHAPES)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 arms")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 cells, 1 epoch")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        help="sample cells of at most this many tokens (memory of the reference's batches)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both arms)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.cells, args.epochs = 60, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    scgf.settings.progress = False
    scgf.settings.verbosity = "warning"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        adata, labels, model = prepare(workdir, args.cells, args.shape, args.max_tokens)
        lengths = np.diff(adata.obsm["gf_tokens"].indptr)
        print(
            f"{args.shape}: {adata.n_obs} cells (tokens per cell: median "
            f"{int(np.median(lengths))}, max {lengths.max()}), {args.epochs} epochs, "
            f"lr {args.learning_rate}, torch threads {torch.get_num_threads()}"
        )
        arms = {"reference": run_reference(adata, labels, model, workdir, args)}
        arms["scgf"] = run_scgf(adata, labels, model, workdir, args, "fp32")
        arms["scgf, attention dropout 0"] = run_scgf(
            adata, labels, model, workdir, args, "fp32", 0.0
        )
        budget = round(12 * lengths.mean())  # about the steps of batches of 12
        arms[f"scgf, attention dropout 0, {budget}-token batches"] = run_scgf(
            adata, labels, model, workdir, args, "fp32", 0.0, budget
        )
        if not args.no_bf16:
            arms["scgf-bf16"] = run_scgf(adata, labels, model, workdir, args, "bf16")
            arms["scgf-bf16, attention dropout 0"] = run_scgf(
                adata, labels, model, workdir, args, "bf16", 0.0
            )
            arms[f"scgf-bf16, attention dropout 0, {budget}-token batches"] = run_scgf(
                adata, labels, model, workdir, args, "bf16", 0.0, budget
            )
    n_cells = adata.n_obs  # every cell holds training genes (8 of each class)
    base = None
    print(
        "| arm | train s | cells/s | ratio | gene macro-F1 | gene AUC | token macro-F1 | "
        "token AUC |"
    )
    print("|---|---|---|---|---|---|---|---|")
    out = {}
    for name, arm in arms.items():
        rate = n_cells * args.epochs / arm["train_seconds"]
        base = base or rate
        fold, tokens = arm["fold"], arm["fold"]["token_level"]
        out[name] = {
            "cells_per_s": rate,
            "ratio": rate / base,
            "gene_macro_f1": fold["macro_f1"],
            "gene_auc": fold["roc_auc"],
            "token_macro_f1": tokens["macro_f1"],
            "token_auc": tokens["roc_auc"],
            "train_seconds": arm["train_seconds"],
        }
        r = out[name]
        print(
            f"| {name} | {r['train_seconds']:.1f} | {rate:.1f} | {r['ratio']:.2f}× | "
            f"{r['gene_macro_f1']:.3f} | {r['gene_auc']:.3f} | {r['token_macro_f1']:.3f} | "
            f"{r['token_auc']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
