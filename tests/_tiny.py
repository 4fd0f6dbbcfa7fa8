"""Tiny random Geneformer-shaped checkpoints (real vocabulary size and context, small width)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

SHAPES = {"V2": (20275, 4096), "V1": (25426, 2048)}


def tiny_config(version: str = "V2", *, hidden: int = 16, layers: int = 2) -> BertConfig:
    vocab_size, context = SHAPES[version]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=context,
        hidden_act="relu",
        layer_norm_eps=1e-12,
        pad_token_id=0,
        type_vocab_size=2,
        hidden_dropout_prob=0.02,
        attention_probs_dropout_prob=0.02,
        # BERT's default 0.02 makes a 16-wide random model nearly blind to its input: deleting
        # a gene moves <cls> by ~1e-7 (float noise), so tests could not tell right from wrong.
        # At 0.2 it spans ~2e-6..1e-3 (median 2e-4), far above the 1e-6 tolerance, while
        # fp32 rounding stays below it (a more peaked attention, e.g. 0.5, amplifies it).
        initializer_range=0.2,
    )


def make_tiny_checkpoint(directory: Path, version: str = "V2", seed: int = 0) -> Path:
    """Save a random ``BertForMaskedLM`` with Geneformer's shape rules into ``directory``."""
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_config(version))
    model.save_pretrained(directory)
    return Path(directory)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous count. Tiny models run far
    faster on one thread than on contended cores (more threads spin on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
