"""The reference's way of embedding (spec §4.2), written directly with transformers.

Full ``BertForMaskedLM`` forward with ``output_hidden_states=True`` on fixed batches of cells in
input order, right-padded to the batch's longest cell; ``hidden_states[n_layers + layer]``.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import BertForMaskedLM

import scgf


def reference_embeddings(folder, adata, *, layer=-1, special=True, batch_size=12):
    model = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    n_layers = model.config.num_hidden_layers
    cells = scgf.get.tokens(adata)
    cls, mean = [], []
    gene_sums, gene_counts = {}, {}
    for start in range(0, len(cells), batch_size):
        batch = cells[start : start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(batch):
            ids[i, : len(c)] = torch.from_numpy(c.astype(np.int64))
            mask[i, : len(c)] = 1
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[n_layers + layer].numpy().astype(np.float64)
        for i, c in enumerate(batch):
            lo, hi = (1, len(c) - 1) if special else (0, len(c))
            cls.append(hidden[i, 0])
            mean.append(hidden[i, lo:hi].mean(0))
            for pos in range(lo, hi):
                tok = int(c[pos])
                gene_sums[tok] = gene_sums.get(tok, 0) + hidden[i, pos]
                gene_counts[tok] = gene_counts.get(tok, 0) + 1
    genes = {t: gene_sums[t] / gene_counts[t] for t in gene_sums}
    return np.array(cls), np.array(mean), genes
