"""Attention with dropout on CPU: scgf's fused-plus-sparse-correction attention against
PyTorch's ``scaled_dot_product_attention`` with ``dropout_p`` (what transformers' ``sdpa``
runs when training), one forward and backward of one layer's attention.

Run: ``python -m benchmarks.cpu_attention_speed`` (the V1-10M and V2-104M attention shapes
at 768 positions) or ``--quick``.

Arms, in one process on the same tensors, interleaved, best of ``--repeats``:

- ``sdpa, dropout``: the baseline, ``F.scaled_dot_product_attention(dropout_p=p)``: PyTorch's
  unfused path, every probability materialised with a Bernoulli mask;
- ``scgf, dropout``: :func:`scgf._train._cpu_attention.dropout_attention`;
- ``sdpa, no dropout``: the fused kernel alone, the floor of any dropout method.

Each in fp32 and with bf16 inputs (what autocast gives the attention).
"""

from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch
import torch.nn.functional as F

from scgf._train._cpu_attention import dropout_attention

# (name, heads, head size) of the published shapes' attention
SHAPES = {"Geneformer-V1-10M": (4, 64), "Geneformer-V2-104M": (12, 64)}


def step_seconds(attention, tensors) -> float:
    start = time.perf_counter()
    attention(*tensors).float().sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=12, help="cells per batch (default 12)")
    parser.add_argument("--positions", type=int, default=768)
    parser.add_argument("--dropout", type=float, default=0.02, help="Geneformer's 0.02")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="V1-10M shape, 256 positions")
    args = parser.parse_args()
    shapes = {"Geneformer-V1-10M": SHAPES["Geneformer-V1-10M"]} if args.quick else SHAPES
    width = 256 if args.quick else args.positions
    p = args.dropout
    arms = {
        "sdpa, dropout": lambda q, k, v, m: F.scaled_dot_product_attention(
            q, k, v, attn_mask=m, dropout_p=p
        ),
        "scgf, dropout": lambda q, k, v, m: dropout_attention(
            q, k, v, m, p, 1 / math.sqrt(q.shape[-1])
        ),
        "sdpa, no dropout": lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
    }
    rows = []
    for name, (heads, size) in shapes.items():
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            shape = (args.cells, heads, width, size)
            tensors = [torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3)]
            mask = torch.ones(args.cells, 1, width, width, dtype=torch.bool)
            mask[::3, :, :, width * 2 // 3 :] = False  # every third cell shorter (padding)
            tensors.append(mask)
            times = {arm: [] for arm in arms}
            for attention in arms.values():  # warm-up
                step_seconds(attention, tensors)
            for _ in range(args.repeats):
                for arm, attention in arms.items():
                    times[arm].append(step_seconds(attention, tensors))
            best = {arm: min(t) for arm, t in times.items()}
            rows.append(
                {
                    "shape": name,
                    "dtype": str(dtype).removeprefix("torch."),
                    **{f"{arm} s": round(best[arm], 3) for arm in arms},
                    "speed-up vs sdpa dropout": round(
                        best["sdpa, dropout"] / best["scgf, dropout"], 2
                    ),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
