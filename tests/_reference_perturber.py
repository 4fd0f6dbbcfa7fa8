"""A direct implementation of the reference's in silico perturbation (spec §5), for tests.

Plain lists and a plain ``BertForMaskedLM(output_hidden_states=True)`` forward on right-padded
batches of 12; cosine with ``torch.nn.CosineSimilarity``.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import BertForMaskedLM

from tests._reference_forward import padded_forward

COS = torch.nn.CosineSimilarity(dim=-1)


class Reference:
    def __init__(self, folder, special: bool, layer: int = -1):
        self.model = BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
        self.index = self.model.config.num_hidden_layers + layer
        self.special = special

    def hidden(self, sequences):
        return padded_forward(self.model, sequences, self.index)

    def pool(self, hidden, pooling):
        if pooling == "cls":
            return hidden[0]
        return hidden[1:-1].mean(0) if self.special else hidden.mean(0)

    def genes_of(self, seq):
        return list(seq[1:-1]) if self.special else list(seq)

    def wrap(self, genes, seq):
        return [seq[0], *genes, seq[-1]] if self.special else list(genes)


def copies_all(ref, seq, perturb_type, fraction=0.5):
    """(token, perturbed sequence) for every gene of a cell, the reference's "all" mode."""
    genes = ref.genes_of(seq)
    out = []
    for i, tok in enumerate(genes):
        if perturb_type == "delete":
            new = genes[:i] + genes[i + 1 :]
        elif perturb_type == "overexpress":
            if i == 0:
                continue
            new = [tok, *genes[:i], *genes[i + 1 :]]
        else:  # our documented inhibit/activate
            rest = genes[:i] + genes[i + 1 :]
            if perturb_type == "inhibit":
                if i == len(genes) - 1:
                    continue
                new_pos = i + int(np.floor(fraction * (len(genes) - 1 - i) + 0.5))
            else:
                if i == 0:
                    continue
                new_pos = i - int(np.floor(fraction * i + 0.5))
            new = [*rest[:new_pos], tok, *rest[new_pos:]]
        out.append((tok, ref.wrap(new, seq)))
    return out


def scores(ref, seq, copies, pooling, states=None, gene_shifts=False):
    """Per copy: score(s), and {(perturbed token, affected token): cosine}."""
    hidden = ref.hidden([list(seq)] + [c for _, c in copies])
    original, perturbed = hidden[0], hidden[1:]
    pooled_o = ref.pool(original, pooling)
    genes_o = ref.genes_of(seq)
    offset = 1 if ref.special else 0
    out, per_gene = [], {}
    for (tok, copy), h in zip(copies, perturbed, strict=True):
        targets = tok if isinstance(tok, tuple) else (tok,)
        pooled_p = ref.pool(h, pooling)
        genes_p = ref.genes_of(copy)
        pos_o = {g: i + offset for i, g in enumerate(genes_o)}
        pairs = [
            (i + offset, pos_o[g], g)
            for i, g in enumerate(genes_p)
            if g not in targets and g in pos_o
        ]
        gene_cos = [float(COS(h[p], original[o])) for p, o, _ in pairs]
        if gene_shifts:
            for (_, _, g), c in zip(pairs, gene_cos, strict=True):
                per_gene.setdefault((tok, g), []).append(c)
        if states is not None:
            out.append([float(COS(pooled_p, s) - COS(pooled_o, s)) for s in states])
        elif pooling == "cls":
            out.append([float(COS(pooled_p, pooled_o))])
        else:
            out.append([float(np.mean(gene_cos))])
    return np.array(out), per_gene


def state_means(ref, sequences, pooling):
    return torch.stack([ref.pool(h, pooling) for h in ref.hidden(sequences)]).mean(0)
