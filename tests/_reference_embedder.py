"""The reference's way of embedding (spec §4.2), written directly with transformers.

Full ``BertForMaskedLM`` forward with ``output_hidden_states=True`` on fixed batches of cells in
input order, right-padded to the batch's longest cell; ``hidden_states[n_layers + layer]``.
"""

from __future__ import annotations

import numpy as np
from transformers import BertForMaskedLM

import scgf
from tests._reference_forward import padded_forward


def reference_embeddings(folder, adata, *, layer=-1, special=True, batch_size=12):
    model = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    n_layers = model.config.num_hidden_layers
    cells = scgf.get.tokens(adata)
    cls, mean = [], []
    gene_sums, gene_counts = {}, {}
    for c, h in zip(cells, padded_forward(model, cells, n_layers + layer, batch_size), strict=True):
        hidden = h.numpy().astype(np.float64)
        lo, hi = (1, len(c) - 1) if special else (0, len(c))
        cls.append(hidden[0])
        mean.append(hidden[lo:hi].mean(0))
        for pos in range(lo, hi):
            tok = int(c[pos])
            gene_sums[tok] = gene_sums.get(tok, 0) + hidden[pos]
            gene_counts[tok] = gene_counts.get(tok, 0) + 1
    genes = {t: gene_sums[t] / gene_counts[t] for t in gene_sums}
    return np.array(cls), np.array(mean), genes
