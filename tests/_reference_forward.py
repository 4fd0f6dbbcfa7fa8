"""The reference's forward pass (spec §4.2), shared by the test references and benchmarks."""

from __future__ import annotations

import numpy as np
import torch


def padded_forward(model, sequences, layer_index: int, batch_size: int = 12) -> list[torch.Tensor]:
    """``hidden_states[layer_index]`` of each sequence, unpadded.

    ``model`` is a ``BertForMaskedLM``; sequences run in the given order in fixed batches,
    right-padded with ``<pad>`` (0) to the batch's longest, with a 1/0 attention mask, on the
    model's device.
    """
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
            mask[i, : len(s)] = 1
        with torch.no_grad():
            hidden = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
            ).hidden_states[layer_index]
        out.extend(hidden[i, : len(s)] for i, s in enumerate(batch))
    return out
