"""Fine-tuning throughput and quality: scgf.tl.finetune versus the reference's way, same run.

Run: ``python -m benchmarks.finetune_speed [--cells 1200] [--epochs 3] [--shape Geneformer-V1-10M]``
(``--quick`` for a smoke run); on a GPU ``--shape Geneformer-V2-104M --device cuda``.

Cells are real (``pbmc_sorted_zheng2017_3100``: five FACS-sorted PBMC types, ``cell_type``),
drawn stratified, tokenized with the real dictionaries; the model has the real shape of the
named checkpoint with random weights (no pretrained weights are reachable here, so the
macro-F1 figures show what training learns from scratch, not Geneformer's). Every arm trains
on the same cells, validates and is tested on the same held-out cells (the split scgf draws).

Arms, each in its own process (so peak memory is the arm's own):

- ``reference``: the reference classifier's training (spec §6.3): ``BertForSequenceClassification``
  through a plain ``transformers.Trainer``, batches of 12 in random order right-padded to the
  batch's longest cell, fp32, evaluation each epoch and the best epoch kept (by macro-F1);
- ``scgf``: ``scgf.tl.finetune`` with its defaults (length-grouped batches of 12, fp32);
- ``scgf-bf16``: the same with ``precision="bf16"`` (autocast; pays on CPUs with AMX/AVX-512
  bf16 units and on GPUs);
- ``scgf-lora`` / ``scgf-qlora`` (not run by default): LoRA adapters (r=64, alpha=128), and
  QLoRA (4-bit nf4 weights + LoRA, bf16; CUDA only), for their speed and peak GPU memory;
- ``logreg``: a plain baseline on the same split: logistic regression on the first 50
  principal components of the log-normalised 2,000 most variable genes.

Training cells/s count training steps only (from each epoch's start to its end, evaluation and
checkpointing excluded), identically for every arm (a Trainer callback).
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


def peak_rss_gb() -> float:
    """The process's peak resident memory (Linux ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def prepare(workdir: Path, n_cells: int, shape_name: str, context: int | None) -> None:
    """Cells (stratified sample, tokenized), the random model, and scgf's split."""
    import scgf

    real = ad.read_h5ad(SOURCE)
    rng = np.random.default_rng(0)
    per_class = n_cells // real.obs[LABEL].nunique()
    picks = np.concatenate(
        [
            rng.choice(np.flatnonzero(real.obs[LABEL] == c), per_class, replace=False)
            for c in real.obs[LABEL].cat.categories
        ]
    )
    adata = real[np.sort(picks)].copy()
    shape = SHAPES[shape_name]
    model = workdir / "model"
    random_model(shape, str(model))
    add_dictionaries(model, shape["version"])
    scgf.settings.progress = False
    scgf.pp.tokenize(adata, model=str(model), gene_key="ensembl_id", context_size=context)
    adata.write_h5ad(workdir / "cells.h5ad")


def run_scgf(workdir: Path, epochs: float, precision: str | None, device: str, **options) -> dict:
    import scgf

    scgf.settings.progress = False
    adata = ad.read_h5ad(workdir / "cells.h5ad")
    timer = training_timer()
    scgf.tl.finetune(
        adata,
        LABEL,
        model=str(workdir / "model"),
        output_dir=workdir / "_".join(["scgf", precision or "fp32", *options]),
        epochs=epochs,
        precision=precision,
        device=device,
        callbacks=[timer],
        random_state=0,
        **options,
    )
    if precision is None and not options:  # the split every other arm uses
        adata.obs[[SPLIT]].to_csv(workdir / "split.csv")
    n_train = int((adata.obs[SPLIT] == "train").sum())
    test = scgf.get.finetune_metrics_df(adata)
    f1 = test.query("split == 'test' and metric == 'macro_f1'")["value"].iloc[0]
    return {
        "train_seconds": timer.seconds,
        "cells_per_s": n_train * epochs / timer.seconds,
        "test_macro_f1": float(f1),
    }


def run_reference(workdir: Path, epochs: float, device: str) -> dict:
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

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        str(workdir / "model"),
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    args = TrainingArguments(
        output_dir=str(workdir / "reference"),
        num_train_epochs=epochs,
        per_device_train_batch_size=12,
        per_device_eval_batch_size=12,
        learning_rate=5e-5,
        weight_decay=0.001,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        train_sampling_strategy="random",  # the reference: group_by_length=False
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=device == "cpu",
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
    sc.pp.pca(adata, n_comps=50, random_state=0)
    x, y = adata.obsm["X_pca"], adata.obs[LABEL].astype(str).to_numpy()
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    fit = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    return {"test_macro_f1": float(f1_score(y[test], fit.predict(x[test]), average="macro"))}


def arm_main(arm: str, workdir: Path, epochs: float, device: str) -> None:
    t0 = time.perf_counter()
    if arm == "reference":
        result = run_reference(workdir, epochs, device)
    elif arm == "logreg":
        result = run_logreg(workdir)
    else:
        options = {"scgf-lora": {"lora": True}, "scgf-qlora": {"lora": True, "quantize": "4bit"}}
        precision = "bf16" if arm in ("scgf-bf16", "scgf-qlora") else None
        result = run_scgf(workdir, epochs, precision, device, **options.get(arm, {}))
    result.update(arm=arm, wall_seconds=time.perf_counter() - t0, peak_rss_gb=peak_rss_gb())
    if device.startswith("cuda"):
        import torch

        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    print("RESULT " + json.dumps(result))


def run_arm(arm: str, workdir: Path, epochs: float, device: str) -> dict:
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
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1200)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--shape", default="Geneformer-V1-10M", choices=SHAPES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--context", type=int, default=None, help="keep each cell's top genes only (memory)"
    )
    parser.add_argument("--arms", nargs="+", default=["scgf", "reference", "scgf-bf16", "logreg"])
    parser.add_argument("--quick", action="store_true", help="200 cells, 1 epoch")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        arm_main(args.arm, Path(args.workdir), args.epochs, args.device)
        return
    if args.quick:
        args.cells, args.epochs = 200, 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.cells, args.shape, args.context)
        arms = ["scgf"] + [a for a in args.arms if a != "scgf"]  # scgf draws the split
        results = {}
        for arm in arms:
            results[arm] = run_arm(arm, workdir, args.epochs, args.device)
            print(f"{arm}: {results[arm]}", file=sys.stderr)
    ref = results.get("reference")
    summary = {
        "shape": args.shape,
        "cells": args.cells,
        "epochs": args.epochs,
        "device": args.device,
        "arms": results,
    }
    if ref:
        for arm in ("scgf", "scgf-bf16", "scgf-lora", "scgf-qlora"):
            if arm in results:
                summary[f"{arm}_speed_ratio"] = results[arm]["cells_per_s"] / ref["cells_per_s"]
                summary[f"{arm}_f1_minus_reference"] = (
                    results[arm]["test_macro_f1"] - ref["test_macro_f1"]
                )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
