"""What a small pretraining budget buys: held-out masked-token loss against frequency
baselines, and cell embeddings against the same architecture at random initialisation.

Run: ``python -m benchmarks.pretrain_quality`` (the recipe below, about 15 minutes on two CPU
threads; ``--steps``, ``--quick`` for a smoke run, ``--threads``).

**Cells.** Every shared file with measured genes: ``pbmc_sorted_zheng2017_scminer_3500``,
``pbmc_ifnb_kang2018_2000``, ``immune_celltypist_559``, ``tcell_wu2020_200``,
``pbmc68k_reduced_counts`` (passed as files: tokenized chunk by chunk by the corpus code) and
``pbmc_sorted_zheng2017_3100`` without 1,000 of its cells (200 per FACS-sorted type, drawn
once): those 1,000 labelled cells are never pretrained on and are what the embeddings are
scored on. (``pbmc_chr21_10x_v3`` holds only chromosome-21 genes, 19 per cell, and is left
out.) A V2-layout vocabulary (``<cls>`` … ``<eos>``) is built from the pretraining cells
(:func:`scgf.vocab.build`, genes in at least 10 cells) with a context of 256 tokens: a cell is
its 254 top-ranked genes, which carry most of what distinguishes it.

**Recipe.** :func:`scgf.tl.pretrain` from scratch: 4 layers, 128 wide, 4 heads, feed-forward
256, ReLU, no attention dropout (``--attention-dropout``, Geneformer's 0.02 for comparison),
hidden dropout 0.02; batches of
32 cells, AdamW at 2e-3 with a 5 % warm-up and cosine decay, weight decay 0.01, fp32,
``--steps`` optimizer steps (default 1,500: 48,000 cells, 5.6 passes over the corpus); 5 % of
the corpus held out for the masked-token loss (evaluated every 250 steps). Found with short
runs (200-600 steps, one thread): 5e-3 stalled at the frequency baseline where 2e-3 went
below it; a context of 128 tokens, at half the cost per step, reached about the same gap
to its baseline for the same compute, but its embeddings beat the random model's on
silhouette only.

**Reported.**

- *Held-out masked-token loss* (15 % of positions, 80/10/10, the same masks at each
  evaluation) against two context-free baselines computed on the same held-out cells: the
  *token-frequency* baseline (the entropy of their token frequencies: the best loss of a
  model that ignores everything but the overall gene frequencies) and a *rank-aware
  frequency* baseline (the cross-entropy of each held-out token under the training cells'
  token frequencies at its position, smoothed towards the overall frequencies with the best
  of five prior weights on the held-out cells: a model that knows only where in the ranking
  the masked gene sits), and ``log(vocabulary size)``.
- *Embeddings* (:func:`scgf.tl.embed`, ``<cls>`` and mean pooling, the default layer) of the
  1,000 held-out labelled cells from the pretrained model and from the same architecture at
  its random initialisation (the run's own seed, i.e. the weights pretraining started from):
  adjusted Rand index of k-means (k = 5 types, 10 restarts) and silhouette against
  ``cell_type``. For scale, the same scores for a standard non-learned pipeline (50 principal
  components of the 2,000 most variable log-normalised genes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

import scgf
from benchmarks._data import SHARED

DATA = SHARED / "data"
LABELLED = "pbmc_sorted_zheng2017_3100.h5ad"
CORPUS_FILES = (
    "pbmc_sorted_zheng2017_scminer_3500.h5ad",
    "pbmc_ifnb_kang2018_2000.h5ad",
    "immune_celltypist_559.h5ad",
    "tcell_wu2020_200.h5ad",
    "pbmc68k_reduced_counts.h5ad",
)
HELD_OUT_PER_TYPE = 200
EVAL_FRACTION = 0.05
SEED = 0


def recipe(args) -> tuple[dict, dict]:
    """The model shape and the training settings."""
    shape = dict(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=2 * args.hidden,
        hidden_act="relu",
        max_position_embeddings=args.context,
        hidden_dropout_prob=0.02,
        attention_probs_dropout_prob=args.attention_dropout,
    )
    training = dict(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.05,
        lr_scheduler="cosine",
        weight_decay=0.01,
        eval_fraction=EVAL_FRACTION,
        eval_steps=args.eval_every,
        logging_steps=args.log_every,
        save_steps=10**9,  # no checkpoints: the benchmark does not resume
        precision=args.precision,
        device="cpu",
        seed=SEED,
    )
    return shape, training


def split_labelled(path: Path) -> tuple[ad.AnnData, ad.AnnData]:
    """``(pretraining part, held-out labelled cells)`` of the sorted PBMCs: 200 cells of
    each type held out."""
    adata = ad.read_h5ad(path)
    rng = np.random.default_rng(SEED)
    held = np.concatenate(
        [
            rng.choice(np.flatnonzero(adata.obs["cell_type"] == t), HELD_OUT_PER_TYPE, False)
            for t in sorted(adata.obs["cell_type"].unique())
        ]
    )
    mask = np.zeros(adata.n_obs, bool)
    mask[held] = True
    return adata[~mask].copy(), adata[np.sort(held)].copy()


def held_out_tokens(corpus, vocab, work_dir: Path):
    """The tokens of the pretraining corpus's held-out and training cells, split as
    :func:`scgf.tl.pretrain` splits them."""
    from scgf.tl._pretrain._corpus import open_corpus, split_corpus

    data = open_corpus(
        corpus,
        vocab,
        tokens_key="gf_tokens",
        layer=None,
        gene_key="ensembl_id",
        chunk_size=4096,
        work_dir=work_dir,
    )
    train, held = split_corpus(data, EVAL_FRACTION, SEED)
    return (
        [train[i]["input_ids"].numpy() for i in range(len(train))],
        [held[i]["input_ids"].numpy() for i in range(len(held))],
    )


def baselines(train: list[np.ndarray], held: list[np.ndarray], size: int) -> dict:
    """Context-free losses on the held-out cells (see the module docstring)."""
    ids = np.concatenate(held)
    p = np.bincount(ids, minlength=size) / len(ids)
    nonzero = p[p > 0]
    frequency = float(-(nonzero * np.log(nonzero)).sum())
    # token frequencies at each position of the training cells, smoothed towards the overall
    # frequencies (a Dirichlet prior of weight mu, the best of a few on the held-out cells,
    # which flatters this baseline)
    width = max(len(c) for c in train + held)
    counts = np.zeros((width, size))
    for cell in train:
        counts[np.arange(len(cell)), cell] += 1
    overall = (counts.sum(0) + 1) / (counts.sum() + size)
    positions = np.concatenate([np.arange(len(c)) for c in held])
    seen, total = counts[positions, ids], counts.sum(1)[positions]
    rank_aware = min(
        float(-np.log((seen + mu * overall[ids]) / (total + mu)).mean())
        for mu in (1, 10, 100, 1000, 10000)
    )
    return {
        "token_frequency_baseline_loss": frequency,
        "rank_aware_frequency_baseline_loss": rank_aware,
        "uniform_loss": float(np.log(size)),
    }


def cluster_scores(embedding: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    k = len(np.unique(labels))
    found = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(embedding)
    return {
        "ari": round(float(adjusted_rand_score(labels, found)), 4),
        "silhouette": round(float(silhouette_score(embedding, labels)), 4),
    }


def pca_scores(adata: ad.AnnData, labels: np.ndarray) -> dict:
    """The non-learned reference: 50 PCs of the 2,000 most variable log-normalised genes."""
    import scanpy as sc

    x = adata.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    sc.pp.highly_variable_genes(x, n_top_genes=2000, subset=True)
    sc.pp.pca(x, n_comps=50, random_state=0)
    return cluster_scores(x.obsm["X_pca"], labels)


def embedding_scores(folder: Path, cells: ad.AnnData, labels: np.ndarray) -> dict:
    out = {}
    for pooling in ("cls", "mean"):
        query = cells.copy()
        scgf.tl.embed(query, model=folder, pooling=pooling, device="cpu")
        for key, value in cluster_scores(query.obsm["X_geneformer"], labels).items():
            out[f"{pooling}_{key}"] = value
    return out


def run(args) -> dict:
    from transformers import BertConfig

    from scgf._train._masked_lm import MaskedOnlyBertForMaskedLM

    rest, labelled = split_labelled(DATA / LABELLED)
    corpus = [str(DATA / name) for name in CORPUS_FILES] + [rest]
    started = time.perf_counter()
    vocab = scgf.vocab.build(
        corpus, gene_key="ensembl_id", min_cells=10, context_size=args.context, name="shared"
    )
    shape, training = recipe(args)
    report: dict = {
        "corpus_cells": sum(ad.read_h5ad(DATA / n, backed="r").n_obs for n in CORPUS_FILES)
        + rest.n_obs,
        "held_out_labelled_cells": labelled.n_obs,
        "vocabulary_genes": vocab.n_genes,
        "context": args.context,
        "shape": shape,
        "training": training,
        "vocabulary_seconds": round(time.perf_counter() - started, 1),
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        trained, initial = Path(tmp) / "trained", Path(tmp) / "initial"
        train_ids, held_ids = held_out_tokens(corpus, vocab, Path(tmp) / "tokens")
        report.update(baselines(train_ids, held_ids, len(vocab.id_of_token)))
        report["threads"] = torch.get_num_threads()
        start = time.perf_counter()
        result = scgf.tl.pretrain(
            corpus, vocab=vocab, gene_key="ensembl_id", architecture=shape, output_dir=trained,
            **training,
        )  # fmt: skip
        report["pretrain_seconds"] = round(time.perf_counter() - start, 1)
        report["steps"] = result["global_step"]
        report["epochs"] = round(
            result["global_step"] * args.batch_size / result["n_cells"]["train"], 2
        )
        report["n_cells"] = result["n_cells"]
        report["held_out_loss"] = result["eval_loss"]
        report["held_out_accuracy"] = result["eval_accuracy"]
        history = result["history"]
        report["train_loss_curve"] = {
            int(s): round(float(v), 3)
            for s, v in history.dropna(subset=["loss"])[["step", "loss"]].to_numpy()
        }
        if "eval_loss" in history:
            report["held_out_loss_curve"] = {
                int(s): round(float(v), 3)
                for s, v in history.dropna(subset=["eval_loss"])[["step", "eval_loss"]].to_numpy()
            }
        # the same architecture at the weights pretraining started from (pretrain seeds
        # torch with its seed, then builds the model)
        torch.manual_seed(SEED)
        MaskedOnlyBertForMaskedLM(BertConfig.from_pretrained(trained)).save_pretrained(initial)
        vocab.save(initial)
        cells = labelled.copy()
        scgf.pp.tokenize(cells, model=vocab, gene_key="ensembl_id")
        labels = labelled.obs["cell_type"].to_numpy()
        report["embeddings_pretrained"] = embedding_scores(trained, cells, labels)
        report["embeddings_random_init"] = embedding_scores(initial, cells, labels)
        report["embeddings_pca_of_counts"] = pca_scores(labelled, labels)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=0.0,
        help="dropout on the attention weights (Geneformer's recipes: 0.02)",
    )
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where temporary files go")
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.log_every = 20, 10, 5
        args.layers, args.hidden, args.heads = 2, 64, 2
    torch.set_num_threads(args.threads)
    scgf.settings.progress = False
    scgf.settings.verbosity = "warning"
    report = run(args)
    report["environment"] = {"torch": torch.__version__, "threads_requested": args.threads}
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
