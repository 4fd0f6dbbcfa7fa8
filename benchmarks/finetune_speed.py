"""Fine-tuning throughput and quality: scgf.tl.finetune versus the reference's way, same run.

Run: ``python -m benchmarks.finetune_speed [--cells 1200] [--epochs 3] [--shape Geneformer-V1-10M]``
(``--quick`` for a short run, ``--smoke`` to check that every arm runs); on a GPU
``--shape Geneformer-V2-104M --device cuda``. ``--quality`` runs the quality part instead.

Cells are real (``pbmc_sorted_zheng2017_3100``: five FACS-sorted PBMC types, ``cell_type``),
drawn stratified, tokenized with the real dictionaries; the model has the real shape of the
named checkpoint with random weights (no pretrained weights are reachable here, so the
macro-F1 figures show what training learns from scratch, not Geneformer's). Every arm trains
on the same cells, validates and is tested on the same held-out cells (the split scgf draws).

Arms, each in its own process (so peak memory is the arm's own):

- ``reference``: the reference classifier's training (spec §6.3): ``BertForSequenceClassification``
  through a plain ``transformers.Trainer``, batches of 12 in random order right-padded to the
  batch's longest cell, fp32, evaluation each epoch and the best epoch kept (by macro-F1);
- ``scgf``: ``scgf.tl.finetune`` with its defaults (length-grouped batches of 12, fp32, the
  model's 2 % attention dropout);
- ``scgf-bf16``: the same with ``precision="bf16"`` (autocast; pays on CPUs with AMX/AVX-512
  bf16 units and on GPUs);
- ``scgf-ad0`` / ``scgf-bf16-ad0``: fp32 / bf16 with ``attention_dropout=0.0`` (PyTorch's
  fused CPU attention kernels have no dropout, so with the model's dropout every step takes
  the unfused path, whose time and memory grow with the square of the cell length);
- ``scgf-tokens`` (and ``scgf-bf16-tokens``, not run by default): ``attention_dropout=0.0``
  with token-budget batches (``batch_tokens``, by default 12 × the mean cell length: about
  the steps per epoch of batches of 12, with many short cells or a few long ones per batch);
- ``scgf-lora`` / ``scgf-qlora`` (not run by default): LoRA adapters (r=64, alpha=128), and
  QLoRA (4-bit nf4 weights + LoRA, bf16; CUDA only), for their speed and peak GPU memory;
- ``logreg``: a plain baseline on the same split: logistic regression on the first 50
  principal components of the log-normalised 2,000 most variable genes.

Training cells/s count training steps only (from each epoch's start to its end, evaluation and
checkpointing excluded), identically for every arm (a Trainer callback).

Quality (``--quality``): the speed arms' random Geneformer shapes at the reference's learning
rate learn nothing of the cell types in a few epochs, so their macro-F1 shows equal failure,
not quality. This part trains a *small* model (by default 2 layers, 128 wide, V2 vocabulary)
from random initialisation at a learning rate that works from scratch, on each cell's top
genes, once per arm (``--quality-arms``: by default scgf's defaults, the two
``attention_dropout=0`` arms that reach the speed goal, and the reference's way) on the same
split, for each of ``--quality-seeds`` (each seed draws its own split, head initialisation,
dropout and batch order). It reports each arm's held-out macro-F1 per seed, their mean and
spread and the difference to the reference's way, next to the logistic regression baseline
on the same split and chance (0.2 for five balanced classes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np

from benchmarks._data import SHARED, add_dictionaries, training_timer
from benchmarks.embed_speed import SHAPES, random_model

SOURCE = SHARED / "data" / "pbmc_sorted_zheng2017_3100.h5ad"
LABEL = "cell_type"
SPLIT = "scgf_split"
BUDGET = "budget"  # scgf.tl.finetune's batch_tokens= from the run's token budget

# arm: (what it is, scgf.tl.finetune options)
SCGF_ARMS = {
    "scgf": ("scgf (length-grouped batches of 12, fp32)", {}),
    "scgf-bf16": ("scgf, bf16 autocast", {"precision": "bf16"}),
    "scgf-ad0": ("scgf fp32, attention_dropout=0", {"attention_dropout": 0.0}),
    "scgf-bf16-ad0": (
        "scgf bf16, attention_dropout=0",
        {"precision": "bf16", "attention_dropout": 0.0},
    ),
    "scgf-tokens": (
        "scgf fp32, attention_dropout=0, token-budget batches",
        {"attention_dropout": 0.0, "batch_tokens": BUDGET},
    ),
    "scgf-bf16-tokens": (
        "scgf bf16, attention_dropout=0, token-budget batches",
        {"precision": "bf16", "attention_dropout": 0.0, "batch_tokens": BUDGET},
    ),
    "scgf-lora": ("scgf, LoRA (r 64, alpha 128)", {"lora": True}),
    "scgf-qlora": (
        "scgf, QLoRA (4-bit nf4 + LoRA, bf16)",
        {"quantize": "4bit", "precision": "bf16"},
    ),
}
LABELS = {
    "reference": "reference (random batches of 12, fp32)",
    "logreg": "logistic regression on PCA",
    **{arm: label for arm, (label, _) in SCGF_ARMS.items()},
}
DEFAULT_ARMS = [
    "scgf",
    "reference",
    "scgf-bf16",
    "scgf-ad0",
    "scgf-bf16-ad0",
    "scgf-tokens",
    "logreg",
]


def peak_rss_gb() -> float:
    """The process's peak resident memory (Linux ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def stratified_cells(n_cells: int, seed: int = 0) -> ad.AnnData:
    """About ``n_cells`` real cells, ``n_cells / 5`` of each sorted type (all of a type that
    has fewer: the file holds 200 B cells)."""
    real = ad.read_h5ad(SOURCE)
    rng = np.random.default_rng(seed)
    per_class = n_cells // real.obs[LABEL].nunique()
    members = [np.flatnonzero(real.obs[LABEL] == c) for c in real.obs[LABEL].cat.categories]
    picks = np.concatenate(
        [rng.choice(rows, min(per_class, len(rows)), replace=False) for rows in members]
    )
    return real[np.sort(picks)].copy()


def prepare(workdir: Path, n_cells: int, shape: dict, context: int | None) -> tuple[int, float]:
    """Cells (stratified sample, tokenized) and the random model in ``workdir``; returns the
    number of cells and their mean tokens per cell."""
    import scgf

    adata = stratified_cells(n_cells)
    model = workdir / "model"
    random_model(shape, str(model))
    add_dictionaries(model, shape["version"])
    scgf.settings.progress = False
    scgf.pp.tokenize(adata, model=str(model), gene_key="ensembl_id", context_size=context)
    adata.write_h5ad(workdir / "cells.h5ad")
    return adata.n_obs, float(np.diff(adata.obsm["gf_tokens"].tocsr().indptr).mean())


def run_scgf(
    workdir: Path, arm: str, epochs: float, device: str, batch_tokens: int | None, **extra
) -> dict:
    import scgf

    scgf.settings.progress = False
    adata = ad.read_h5ad(workdir / "cells.h5ad")
    timer = training_timer()
    options = {**SCGF_ARMS[arm][1], **extra}
    if options.get("batch_tokens") == BUDGET:
        options["batch_tokens"] = batch_tokens
    scgf.tl.finetune(
        adata,
        LABEL,
        model=str(workdir / "model"),
        output_dir=workdir / arm,
        epochs=epochs,
        device=device,
        callbacks=[timer],
        random_state=0,
        **options,
    )
    if arm == "scgf":  # the split every other arm uses
        adata.obs[[SPLIT]].to_csv(workdir / "split.csv")
    n_train = int((adata.obs[SPLIT] == "train").sum())
    test = scgf.get.finetune_metrics_df(adata)
    f1 = test.query("split == 'test' and metric == 'macro_f1'")["value"].iloc[0]
    return {
        "train_seconds": timer.seconds,
        "cells_per_s": n_train * epochs / timer.seconds,
        "test_macro_f1": float(f1),
    }


def run_reference(
    workdir: Path,
    epochs: float,
    device: str,
    *,
    learning_rate: float = 5e-5,
    batch_size: int = 12,
    schedule: dict | None = None,
    seed: int = 0,
) -> dict:
    import pandas as pd
    import torch
    from transformers import BertForSequenceClassification, Trainer, TrainingArguments

    import scgf
    from scgf._train import ClassificationCollator, TokenDataset
    from scgf._train._metrics import classification_metrics, trainer_metrics

    adata = ad.read_h5ad(workdir / "cells.h5ad")
    split = pd.read_csv(workdir / "split.csv", index_col=0)[SPLIT].reindex(adata.obs_names)
    classes = list(adata.obs[LABEL].cat.categories)
    codes = adata.obs[LABEL].cat.codes.to_numpy()
    tokens = scgf.get.token_matrix(adata)

    def dataset(which: str) -> TokenDataset:
        return TokenDataset(tokens, cell_labels=np.where(split == which, codes, -1))

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        str(workdir / "model"),
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    args = TrainingArguments(
        output_dir=str(workdir / "reference"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=0.001,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        train_sampling_strategy="random",  # the reference: group_by_length=False
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        use_cpu=device == "cpu",
        **(schedule or {}),
    )
    timer = training_timer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset("train"),
        eval_dataset=dataset("validation"),
        data_collator=ClassificationCollator(pad_id=0),
        compute_metrics=trainer_metrics,
        callbacks=[timer],
    )
    trainer.train()
    test = dataset("test")
    logits = trainer.predict(test).predictions
    proba = torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)), -1).numpy()
    metrics = classification_metrics(test.cell_labels[test.index], proba, classes)
    n_train = len(dataset("train"))
    return {
        "train_seconds": timer.seconds,
        "cells_per_s": n_train * epochs / timer.seconds,
        "test_macro_f1": float(metrics["macro_f1"]),
    }


def run_logreg(workdir: Path) -> dict:
    import pandas as pd
    import scanpy as sc
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    adata = ad.read_h5ad(workdir / "cells.h5ad")
    split = pd.read_csv(workdir / "split.csv", index_col=0)[SPLIT].reindex(adata.obs_names)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, subset=True)
    sc.pp.pca(adata, n_comps=min(50, adata.n_obs - 1), random_state=0)  # 50 (fewer: smoke)
    x, y = adata.obsm["X_pca"], adata.obs[LABEL].astype(str).to_numpy()
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    fit = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    return {"test_macro_f1": float(f1_score(y[test], fit.predict(x[test]), average="macro"))}


def arm_main(arm: str, workdir: Path, epochs: float, device: str, batch_tokens: int | None):
    t0 = time.perf_counter()
    if arm == "reference":
        result = run_reference(workdir, epochs, device)
    elif arm == "logreg":
        result = run_logreg(workdir)
    else:
        result = run_scgf(workdir, arm, epochs, device, batch_tokens)
    result.update(arm=arm, wall_seconds=time.perf_counter() - t0, peak_rss_gb=peak_rss_gb())
    if device.startswith("cuda"):
        import torch

        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    print("RESULT " + json.dumps(result))


def run_arm(
    arm: str, workdir: Path, epochs: float, device: str, batch_tokens: int | None = None
) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.finetune_speed",
        "--arm",
        arm,
        "--workdir",
        str(workdir),
        "--epochs",
        str(epochs),
        "--device",
        device,
        *(["--batch-tokens", str(batch_tokens)] if batch_tokens else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def speed_table(results: dict) -> str:
    """The arms as a markdown table (ratios to the reference arm of the same run)."""
    ref = results.get("reference")
    rows = [
        "| arm | training cells/s | ratio | test macro-F1 | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for arm, r in results.items():
        speed = r.get("cells_per_s")
        ratio = f"{speed / ref['cells_per_s']:.2f}x" if ref and speed else "-"
        rows.append(
            f"| {LABELS[arm]} | {f'{speed:.2f}' if speed else '-'} | {ratio} | "
            f"{r['test_macro_f1']:.3f} | {r['peak_rss_gb']:.1f} GB |"
        )
    return "\n".join(rows)


def run_speed(args) -> dict:
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        n_cells, mean_tokens = prepare(workdir, args.cells, shape, args.context)
        budget = args.batch_tokens or round(12 * mean_tokens)
        arms = ["scgf"] + [a for a in args.arms if a != "scgf"]  # scgf draws the split
        results = {}
        for arm in arms:
            results[arm] = run_arm(arm, workdir, args.epochs, args.device, budget)
            print(f"{arm}: {results[arm]}", file=sys.stderr)
    summary = {
        "shape": args.shape,
        "cells": n_cells,
        "epochs": args.epochs,
        "context": args.context,
        "device": args.device,
        "mean_tokens_per_cell": mean_tokens,
        "batch_tokens": budget,
        "arms": results,
    }
    ref = results.get("reference")
    if ref:
        for arm in results:
            if arm in SCGF_ARMS:
                summary[f"{arm}_speed_ratio"] = results[arm]["cells_per_s"] / ref["cells_per_s"]
                summary[f"{arm}_f1_minus_reference"] = (
                    results[arm]["test_macro_f1"] - ref["test_macro_f1"]
                )
    print(speed_table(results), file=sys.stderr)
    return summary


# -- quality -----------------------------------------------------------------------------


def small_model(folder: Path, layers: int, hidden: int) -> None:
    """A random BERT with Geneformer V2's vocabulary and rules, ``layers`` × ``hidden``."""
    shape = dict(
        version="V2",
        layers=layers,
        hidden=hidden,
        heads=max(hidden // 64, 2),
        intermediate=4 * hidden,
        vocab=SHAPES["Geneformer-V2-104M"]["vocab"],
        context=SHAPES["Geneformer-V2-104M"]["context"],
    )
    random_model(shape, str(folder))
    add_dictionaries(folder, "V2")


QUALITY_ARMS = ["scgf", "scgf-ad0", "scgf-bf16-ad0", "reference"]


def quality_arm(arm: str, workdir: Path, args, seed: int) -> dict:
    """One arm of the quality part on the prepared cells and split (``split.csv``)."""
    import pandas as pd

    import scgf

    schedule = {"warmup_steps": 0.1, "lr_scheduler_type": "linear"}
    if arm == "reference":
        # the reference's way (random batches, plain Trainer) with the same model, split,
        # learning rate, schedule and batch size
        return run_reference(
            workdir,
            args.quality_epochs,
            args.device,
            learning_rate=args.quality_lr,
            batch_size=args.quality_batch_size,
            schedule=schedule,
            seed=seed,
        )
    adata = ad.read_h5ad(workdir / "cells.h5ad")
    options = dict(SCGF_ARMS[arm][1])
    if options.get("batch_tokens") == BUDGET:
        lengths = np.diff(adata.obsm["gf_tokens"].tocsr().indptr)
        options["batch_tokens"] = round(args.quality_batch_size * lengths.mean())
    split = workdir / "split.csv"
    if split.exists():  # every arm trains on the split the first scgf arm drew
        options["split_key"] = SPLIT
        adata.obs[SPLIT] = pd.read_csv(split, index_col=0)[SPLIT].reindex(adata.obs_names)
    timer = training_timer()
    scgf.tl.finetune(
        adata,
        LABEL,
        model=str(workdir / "model"),
        output_dir=workdir / f"{arm}-{seed}",
        epochs=args.quality_epochs,
        learning_rate=args.quality_lr,
        batch_size=args.quality_batch_size,
        device=args.device,
        callbacks=[timer],
        random_state=seed,
        training_args=schedule,
        **options,
    )
    if not split.exists():
        adata.obs[[SPLIT]].to_csv(split)
    n_train = int((adata.obs[SPLIT] == "train").sum())
    f1 = scgf.get.finetune_metrics_df(adata).query("metric == 'macro_f1'")
    history = scgf.get.training_history_df(adata)
    return {
        "train_seconds": timer.seconds,
        "cells_per_s": n_train * args.quality_epochs / timer.seconds,
        "test_macro_f1": float(f1.set_index("split")["value"]["test"]),
        "eval_macro_f1_by_epoch": [
            round(float(x), 4) for x in history.get("eval_macro_f1", []) if x == x
        ],
    }


def run_quality(args) -> dict:
    """Small models trained from scratch by each arm, over seeds, against logistic
    regression on the same split."""
    import scgf

    scgf.settings.progress = False
    # the first scgf arm draws the split the reference's way then trains on
    arms = sorted(args.quality_arms, key=lambda arm: arm == "reference")
    if arms[0] == "reference":
        raise SystemExit("--quality-arms needs an scgf arm: the first one draws the split")
    runs = []
    for seed in args.quality_seeds:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            adata = stratified_cells(args.quality_cells)
            small_model(workdir / "model", args.quality_layers, args.quality_hidden)
            scgf.pp.tokenize(
                adata,
                model=str(workdir / "model"),
                gene_key="ensembl_id",
                context_size=args.quality_context,
            )
            adata.write_h5ad(workdir / "cells.h5ad")
            run = {"seed": seed, "arms": {}}
            for arm in arms:
                run["arms"][arm] = quality_arm(arm, workdir, args, seed)
                print(f"seed {seed} {arm}: {run['arms'][arm]}", file=sys.stderr)
            run["arms"]["logreg"] = run_logreg(workdir)
            runs.append(run)
    table = {}
    for arm in [*arms, "logreg"]:
        f1 = np.array([r["arms"][arm]["test_macro_f1"] for r in runs])
        speed = [r["arms"][arm].get("cells_per_s") for r in runs]
        table[arm] = {
            # the speed labels say batches of 12; the quality part uses its own batch size
            "label": LABELS[arm].replace("batches of 12", f"batches of {args.quality_batch_size}"),
            "test_macro_f1": [round(float(x), 4) for x in f1],
            "test_macro_f1_mean": float(f1.mean()),
            "test_macro_f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
            "cells_per_s_mean": float(np.mean(speed)) if speed[0] else None,
        }
    reference = table.get("reference")
    if reference:  # paired by seed: each seed has its own split
        for r in table.values():
            paired = np.subtract(r["test_macro_f1"], reference["test_macro_f1"])
            r["minus_reference_mean"] = float(paired.mean())
            r["minus_reference_sd"] = float(paired.std(ddof=1)) if len(paired) > 1 else 0.0
    rows = ["| arm | test macro-F1 (seeds) | mean ± sd | minus reference (paired) | cells/s |"]
    rows.append("|---|---|---|---|---|")
    for arm, r in table.items():
        diff = (
            f"{r['minus_reference_mean']:+.3f} ± {r['minus_reference_sd']:.3f}"
            if reference and arm != "reference"
            else "-"
        )
        speed = f"{r['cells_per_s_mean']:.1f}" if r["cells_per_s_mean"] else "-"
        rows.append(
            f"| {r['label']} | {', '.join(f'{x:.3f}' for x in r['test_macro_f1'])} | "
            f"{r['test_macro_f1_mean']:.3f} ± {r['test_macro_f1_sd']:.3f} | {diff} | {speed} |"
        )
    print("\n".join(rows), file=sys.stderr)
    return {
        "model": {
            "layers": args.quality_layers,
            "hidden": args.quality_hidden,
            "vocabulary": "V2 (gc104M)",
            "init": "random",
        },
        "cells": int(adata.n_obs),
        "context": args.quality_context,
        "epochs": args.quality_epochs,
        "learning_rate": args.quality_lr,
        "batch_size": args.quality_batch_size,
        "seeds": list(args.quality_seeds),
        "chance_macro_f1": 1 / adata.obs[LABEL].nunique(),  # uniform guessing
        "arms": table,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1200)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--shape", default="Geneformer-V1-10M", choices=SHAPES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--context", type=int, default=None, help="keep each cell's top genes only (memory)"
    )
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(LABELS))
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="token budget of the token-budget arms (default 12 x the mean cell length)",
    )
    parser.add_argument("--quick", action="store_true", help="200 cells, 1 epoch")
    parser.add_argument(
        "--smoke", action="store_true", help="checks that every part runs (numbers meaningless)"
    )
    parser.add_argument("--quality", action="store_true", help="run the quality part")
    parser.add_argument("--quality-cells", type=int, default=2000)
    parser.add_argument("--quality-context", type=int, default=256)
    parser.add_argument("--quality-layers", type=int, default=2)
    parser.add_argument("--quality-hidden", type=int, default=128)
    parser.add_argument("--quality-epochs", type=float, default=4)
    parser.add_argument("--quality-lr", type=float, default=1e-3)
    parser.add_argument("--quality-batch-size", type=int, default=16)
    parser.add_argument(
        "--quality-arms", nargs="+", default=QUALITY_ARMS, choices=[*SCGF_ARMS, "reference"]
    )
    parser.add_argument("--quality-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        arm_main(args.arm, Path(args.workdir), args.epochs, args.device, args.batch_tokens)
        return
    if args.quick:
        args.cells, args.epochs = 200, 1
    if args.smoke:
        args.cells, args.epochs, args.context = 50, 1, 64
        args.quality_cells, args.quality_epochs, args.quality_context = 100, 1, 32
    summary = run_quality(args) if args.quality else run_speed(args)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
