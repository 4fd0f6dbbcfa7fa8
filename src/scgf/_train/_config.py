"""Training-time changes to a checkpoint's ``BertConfig`` (shared by every fine-tuning tool)."""

from __future__ import annotations

import math


def config_overrides(*, attention_dropout: float | None = None) -> dict:
    """``BertConfig`` fields to set on the model that is trained; empty keeps the checkpoint's.

    Merge the result into the config before the model is built (``from_pretrained(...,
    **overrides)``, ``BertConfig.from_dict({**config.to_dict(), **overrides})`` or
    ``config.update(overrides)``): BERT reads its dropout rates when its layers are made.

    Parameters
    ----------
    attention_dropout
        Dropout on the attention weights while training (``attention_probs_dropout_prob``);
        ``None`` keeps the checkpoint's (Geneformer's: 0.02). ``0.0`` runs the fused
        attention kernels alone; with dropout, CPU training adds the sparse correction of
        :mod:`scgf._train._cpu_attention`.

    Returns
    -------
    ``{config field: value}`` of the given settings.

    Raises
    ------
    ValueError
        A dropout rate outside [0, 1).
    """
    overrides = {}
    if attention_dropout is not None:
        value = float(attention_dropout)
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(
                f"attention_dropout={attention_dropout!r}; give a rate in [0, 1) (0.0 turns it "
                "off) or None to keep the model's."
            )
        overrides["attention_probs_dropout_prob"] = value
    return overrides
