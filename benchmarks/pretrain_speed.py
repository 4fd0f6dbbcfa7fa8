"""Pretraining throughput: scgf's masked-only decoding versus the reference's way.

Run: ``python -m benchmarks.pretrain_speed`` (``--quick`` for a smoke run; ``--steps``,
``--cells``, ``--max-length`` to size it). What a pretraining budget buys (held-out loss,
embeddings) is measured by ``benchmarks/pretrain_quality.py``, memory on a corpus larger than
memory by ``benchmarks/pretrain_memory.py``.

**Speed.** Training tokens per second on the ``Geneformer-V1-10M`` shape (6 layers, 256 wide,
V1 vocabulary of 25,426 tokens) with random weights, on real cells
(``pbmc_sorted_zheng2017_3100``, tokenized with the real V1 dictionaries). The baseline is the
reference's way (spec §7): ``BertForMaskedLM`` (the MLM head decodes every position), the
reference's collator semantics (transformers' ``DataCollatorForLanguageModeling``, 15 %,
80/10/10), length-grouped batches of 12 (transformers' ``LengthGroupedSampler`` with the
precomputed lengths), fp32, AdamW. scgf trains the same batches (the same cells, padding and
masks) with :class:`scgf._train.MaskedOnlyBertForMaskedLM` in fp32 and under bf16 autocast,
with the model's 2 % attention dropout run as scgf's trainers run it on a CPU (the fused
attention kernel plus a sparse dropout correction, :mod:`scgf._train._cpu_attention`; the
baseline's ``sdpa`` attention with dropout takes PyTorch's unfused path), and both again with
``attention_dropout=0.0`` (``scgf.tl.pretrain``'s option: the fused kernel alone).
Each variant runs the same optimizer steps after two untimed warm-up steps; tokens are the
cells' own (non-padding) tokens. Batches whose longest cell exceeds ``--max-length`` (768)
tokens are skipped: the baseline's full decoder holds 12 × length × 25,426 logits, their
softmax and gradients (about 10 GB at 2,048 tokens).
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

import scgf
from benchmarks._data import SOURCE, real_vocabulary
from scgf._train import TokenDataset, masked_lm_collator
from scgf._train._cpu_attention import use_on_cpu
from scgf._train._masked_lm import MaskedOnlyBertForMaskedLM

V1_10M = dict(
    vocab_size=25426,
    hidden_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=2048,
    hidden_act="relu",
    hidden_dropout_prob=0.02,
    attention_probs_dropout_prob=0.02,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)


# scgf's arms: (name, precision, attention dropout; None keeps the shape's 2 %)
ARMS = [("fp32", "fp32", None), ("bf16", "bf16", None), ("fp32_ad0", "fp32", 0.0),
        ("bf16_ad0", "bf16", 0.0)]  # fmt: skip


def batches(
    tokens, n_batches: int, batch_size: int, vocab, max_length: int, seed: int = 0
) -> list[dict]:
    """The first ``n_batches`` length-grouped batches whose longest cell has at most
    ``max_length`` tokens, masked once (shared by all variants). The cap bounds the full
    decoder's memory (12 × length × 25,426 logits, their softmax and gradients)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    dataset = TokenDataset(tokens)
    order = list(
        LengthGroupedSampler(
            batch_size,
            lengths=[int(n) for n in dataset.lengths],
            generator=torch.Generator().manual_seed(seed),
        )
    )
    collate = masked_lm_collator(vocab, seed=seed)
    out = []
    for b in range(len(order) // batch_size):
        rows = order[b * batch_size : (b + 1) * batch_size]
        if dataset.lengths[rows].max() <= max_length:
            out.append(collate([dataset[i] for i in rows]))
        if len(out) == n_batches:
            break
    return out


def train_speed(
    model_class,
    data: list[dict],
    precision: str,
    attention_dropout: float | None = None,
    warmup: int = 2,
) -> dict:
    shape = dict(V1_10M)
    if attention_dropout is not None:  # what scgf.tl.pretrain(attention_dropout=...) sets
        shape["attention_probs_dropout_prob"] = attention_dropout
    torch.manual_seed(0)
    model = model_class(BertConfig(**shape)).train()
    if model_class is MaskedOnlyBertForMaskedLM:
        use_on_cpu(model)  # what scgf.tl.pretrain's trainer does on a CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.001)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    tokens = seconds = 0.0
    losses = []
    for i, batch in enumerate(data):
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            seconds += time.perf_counter() - start
            tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "first_loss": losses[0]}


def speed(n_steps: int, n_cells: int, max_length: int) -> dict:
    vocab = real_vocabulary("V1")
    adata = ad.read_h5ad(SOURCE)[:n_cells].copy()
    tokens = scgf.pp.tokenize(adata, model=vocab, gene_key="ensembl_id", inplace=False)
    data = batches(tokens, n_steps + 2, 12, vocab, max_length)
    lengths = [int(b["attention_mask"].sum()) / len(b["input_ids"]) for b in data]
    report = {
        "shape": "Geneformer-V1-10M",
        "steps_timed": n_steps,
        "batch_size": 12,
        "max_tokens_per_cell": max_length,
        "mean_tokens_per_cell": float(np.mean(lengths)),
        "masked_fraction": float(
            np.mean(
                [
                    (b["labels"] != -100).sum().item() / b["attention_mask"].sum().item()
                    for b in data
                ]
            )
        ),
    }
    reference = train_speed(BertForMaskedLM, data, "fp32")
    report["reference_tokens_per_s"] = reference["tokens_per_s"]
    report["first_loss_reference"] = reference["first_loss"]
    for name, precision, attention_dropout in ARMS:
        arm = train_speed(MaskedOnlyBertForMaskedLM, data, precision, attention_dropout)
        report[f"scgf_{name}_tokens_per_s"] = arm["tokens_per_s"]
        report[f"ratio_{name}"] = arm["tokens_per_s"] / reference["tokens_per_s"]
        report[f"first_loss_scgf_{name}"] = arm["first_loss"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--cells", type=int, default=600, help="cells for the speed part")
    parser.add_argument(
        "--max-length", type=int, default=768, help="longest cell of a timed batch (memory)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (minutes)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.cells = 3, 200
    scgf.settings.progress = False
    scgf.settings.verbosity = "warning"
    results = {"speed": speed(args.steps, args.cells, args.max_length)}
    results["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
