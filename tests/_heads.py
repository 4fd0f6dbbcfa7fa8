"""Helpers for the multi-task, LoRA and adapter-folder tests: a constructed two-task problem
and fine-tuned / adapter folders built from tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import BertForMaskedLM

from tests._tiny import tiny_config

MARKER, RANKED = 7000, 8000
TASKS = {"marker": ["absent", "present"], "rank": ["high", "low"]}


def toy_cells(n: int, seed: int, *, missing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` V2-style cells of 16 genes and their labels for two tasks.

    ``marker``: whether gene ``MARKER`` is present (in the middle of the ranking);
    ``rank``: whether gene ``RANKED`` (always present) is among the top 3 genes or the
    bottom 4. A fraction ``missing`` of the labels is ``-100``.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, 18), dtype=np.int64)
    labels = np.zeros((n, 2), dtype=np.int64)
    for i in range(n):
        genes = rng.choice(np.arange(10, 400), size=16, replace=False)
        present, high = rng.random() < 0.5, rng.random() < 0.5
        if present:
            genes[rng.integers(4, 12)] = MARKER
        genes[rng.integers(0, 3) if high else rng.integers(12, 16)] = RANKED
        ids[i] = [2, *genes, 3]
        labels[i] = [int(present), int(not high)]
    labels[rng.random(labels.shape) < missing] = -100
    return torch.from_numpy(ids), torch.from_numpy(labels)


def small_backbone(seed: int = 0, *, hidden: int = 32) -> BertForMaskedLM:
    """A random masked-LM backbone with a small vocabulary (fast to train on the toy task)."""
    torch.manual_seed(seed)
    config = tiny_config(hidden=hidden, layers=2)
    config.vocab_size = 9000
    return BertForMaskedLM(config)


def train(model, ids: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float, seed=0):
    """Plain AdamW steps on random batches of 32; returns the last loss."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(ids), (32,), generator=generator)
        loss = model(input_ids=ids[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()


def padded(cells: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the boolean mask of real positions."""
    width = max(len(c) for c in cells)
    ids = torch.zeros(len(cells), width, dtype=torch.long)
    for i, c in enumerate(cells):
        ids[i, : len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(c) for c in cells])
    return ids, torch.arange(width)[None] < lengths[:, None]


def randomize_adapter(peft_model, seed: int = 0) -> None:
    """Give LoRA B matrices and the saved head copies random values (peft starts B at 0,
    which would make merged = base and hide a missing adapter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def tiny_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny real-shaped (V2) masked-LM checkpoint folder."""
    torch.manual_seed(seed)
    BertForMaskedLM(tiny_config("V2")).save_pretrained(folder)
    return Path(folder)


LABELS = {0: "b", 1: "t", 2: "nk"}


def adapter_folder(folder: Path, base: Path, kind: str = "cell", *, seed: int = 0):
    """LoRA-adapt a classifier on the checkpoint ``base`` (random adapter values), save it as
    an adapter folder with ``scgf.json`` naming ``base``; returns (folder, peft model in eval
    mode)."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from scgf._train import MultiTaskClassifier, apply_lora, save_adapter
    from scgf._train._saved import write_metadata

    torch.manual_seed(seed)
    if kind == "cell":
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        model = BertForSequenceClassification.from_pretrained(
            base, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
        )
        hf_logging.set_verbosity(verbosity)
        task = "cell_classification"
    else:
        model = MultiTaskClassifier.from_backbone(base, TASKS, pooling="attention")
        task = "multitask_cell_classification"
    lora = apply_lora(model, task=task, r=4, alpha=8)
    randomize_adapter(lora, seed)
    save_adapter(lora, folder, base_model=str(base))
    write_metadata(folder, {"task": task, "base_model": str(base)})
    return Path(folder), lora.eval()
