"""In silico deletion throughput: scgf.tl.perturb versus the reference's way, same run.

Run: ``python -m benchmarks.perturb_speed [--cells 1] [--quantile 0.5] [--batches 100 12]``;
on a GPU e.g. ``--shape Geneformer-V2-104M --device cuda --cells 4 --batches 100``.

A model with the real ``gf-12L-95M-i4096`` shape and random weights (BERT's initialisation);
real cells of ``pbmc_ifnb_kang2018_2000`` whose token counts sit at the given quantile of that
dataset; ``genes="all"`` deletion (one perturbed copy per expressed gene). The baseline follows
the reference (spec §5): every perturbed copy in fixed batches (``forward_batch_size``, 100 by
default in the reference), fp32 ``BertForMaskedLM`` with all hidden states (current
transformers' default attention), cosine of the ``<cls>`` embeddings of layer -1.

scgf runs twice: fp32 (the CPU default, exact) and bf16 autocast (``dtype="bfloat16"``, opt-in
on CPU, the default on CUDA); the bf16 scores are compared with the exact ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import anndata as ad
import numpy as np
import torch
from scipy.stats import spearmanr
from tests._reference_forward import padded_forward
from transformers import BertForMaskedLM

import scgf
from benchmarks._data import SHARED, add_dictionaries, real_vocabulary
from benchmarks.embed_speed import SHAPES, random_model


def baseline(
    folder: str, adata: ad.AnnData, batch_size: int, device: str
) -> dict[tuple[int, int], float]:
    """The reference's way: ``{(cell, deleted token): cosine}``."""
    model = BertForMaskedLM.from_pretrained(folder).to(device).eval()
    index = model.config.num_hidden_layers - 1
    scores = {}
    for cell, seq in enumerate(scgf.get.tokens(adata)):
        seq = seq.astype(np.int64)
        copies = [np.delete(seq, i) for i in range(1, len(seq) - 1)]
        original = padded_forward(model, [seq], index)[0][0]
        hidden = padded_forward(model, copies, index, batch_size=batch_size)
        cls = torch.stack([h[0] for h in hidden])
        cos = torch.nn.CosineSimilarity(dim=-1)(cls, original[None])
        for i, value in enumerate(cos):
            scores[(cell, int(seq[i + 1]))] = float(value)
    return scores


def scgf_scores(folder: str, adata: ad.AnnData, dtype: str, device: str) -> tuple[dict, float]:
    """scgf's ``{(cell, deleted token): cosine}`` and its run time in seconds."""
    run = adata.copy()
    start = time.perf_counter()
    scgf.tl.perturb(run, "all", model=folder, dtype=dtype, device=device)
    seconds = time.perf_counter() - start
    layer = run.layers["scgf_perturb"].tocoo()
    tokens = real_vocabulary("V2").map_genes(run.var_names)
    scores = {
        (int(r), int(tokens[c])): float(v)
        for r, c, v in zip(layer.row, layer.col, layer.data, strict=True)
    }
    return scores, seconds


def agreement(approx: dict, exact: dict, top: int = 20) -> dict:
    """How far approximate deletion effects (1 - cos) are from the exact ones."""
    keys = sorted(exact)
    e = 1 - np.array([exact[k] for k in keys])
    a = 1 - np.array([approx[k] for k in keys])
    top_exact = set(np.argsort(-e)[:top])
    return {
        "max_abs_score_diff": float(np.abs(a - e).max()),
        "median_effect_1_minus_cos": float(np.median(e)),
        "spearman_effects": float(spearmanr(a, e)[0]),
        f"top{top}_overlap": len(top_exact & set(np.argsort(-a)[:top])) / top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1)
    parser.add_argument("--quantile", type=float, default=0.5)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 12])
    parser.add_argument("--shape", default="gf-12L-95M-i4096", choices=SHAPES)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    scgf.settings.progress = False
    vocab = real_vocabulary("V2")
    adata = ad.read_h5ad(SHARED / "data" / "pbmc_ifnb_kang2018_2000.h5ad")
    scgf.pp.tokenize(adata, model=vocab)
    lengths = np.diff(adata.obsm["gf_tokens"].indptr)
    target = np.quantile(lengths, args.quantile)
    cells = np.sort(np.argsort(np.abs(lengths - target))[: args.cells])
    subset = adata[cells].copy()
    n_copies = int((lengths[cells] - 2).sum())
    report = {
        "model_shape": args.shape,
        "device": args.device,
        "tokens_per_cell": lengths[cells].tolist(),
        "perturbed_copies": n_copies,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as folder:
        random_model(SHAPES[args.shape], folder)
        add_dictionaries(folder, "V2")
        exact, fp32_s = scgf_scores(folder, subset, "float32", args.device)
        bf16, bf16_s = scgf_scores(folder, subset, "bfloat16", args.device)
        report["scgf_fp32_copies_per_s"] = n_copies / fp32_s
        report["scgf_bf16_copies_per_s"] = n_copies / bf16_s
        for batch_size in args.batches:
            start = time.perf_counter()
            reference = baseline(folder, subset, batch_size, args.device)
            seconds = time.perf_counter() - start
            report[f"baseline_batch{batch_size}_copies_per_s"] = n_copies / seconds
            report[f"fp32_speedup_vs_batch{batch_size}"] = seconds / fp32_s
            report[f"bf16_speedup_vs_batch{batch_size}"] = seconds / bf16_s
            report[f"fp32_max_abs_diff_vs_batch{batch_size}"] = max(
                abs(exact[k] - reference[k]) for k in reference
            )
    report["bf16_vs_fp32"] = agreement(bf16, exact)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
