"""Masked-language-model training that decodes only the masked positions.

``BertForMaskedLM`` applies its MLM head (a hidden × hidden transform and the hidden ×
vocabulary decoder) at every position and then reads the loss at the ~15 % that were masked.
On Geneformer's shapes the decoder is a large part of the work (V1-10M: 256 × 25,426 per
position, about as much as the encoder layers together). :class:`MaskedOnlyBertForMaskedLM`
runs the encoder as usual, gathers the hidden states at the positions with a label, and
applies the same head there only: the same loss and gradients, a fraction of the head's work.

It has exactly ``BertForMaskedLM``'s parameters and saves as a ``BertForMaskedLM`` (its
``config.json`` names that class), so checkpoints load with
``BertForMaskedLM.from_pretrained`` and everywhere in scgf.
"""

from __future__ import annotations

import torch
from transformers import BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from ._data import IGNORE_INDEX

SAVED_ARCHITECTURE = "BertForMaskedLM"


class MaskedOnlyBertForMaskedLM(BertForMaskedLM):
    """``BertForMaskedLM`` whose loss decodes only the masked positions.

    Without ``labels`` the forward is ``BertForMaskedLM``'s (full logits). With ``labels``
    (``-100`` at positions without a target), ``logits`` holds the decoded positions only,
    shape ``(n_masked, vocab_size)`` in row-major order of ``labels != -100``, and ``loss``
    is their mean cross-entropy: the value ``BertForMaskedLM`` gives for the same batch. A
    batch without any target gives a loss of zero (``BertForMaskedLM`` gives NaN).
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        if labels is None:
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        targets = labels != IGNORE_INDEX
        hidden = outputs.last_hidden_state[targets]  # (n_masked, hidden)
        logits = self.cls(hidden)
        if logits.shape[0]:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[targets])
        else:  # nothing to predict: a zero that keeps the graph (and DDP) connected
            loss = logits.sum() * 0.0
        return MaskedLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as a standard ``BertForMaskedLM`` checkpoint (same parameters, and a
        ``config.json`` naming ``BertForMaskedLM``)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [SAVED_ARCHITECTURE]
            self.config.save_pretrained(save_directory)


def masked_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The predicted token at each labelled position, ``-100`` elsewhere, shaped like
    ``labels``: a Trainer ``preprocess_logits_for_metrics`` for masked-only logits (the
    grid survives padding and gathering across processes)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = torch.full_like(labels, IGNORE_INDEX)
    targets = labels != IGNORE_INDEX
    if logits.dim() == 3:  # full logits (a plain BertForMaskedLM)
        predicted[targets] = logits.argmax(-1)[targets]
    else:
        predicted[targets] = logits.argmax(-1)
    return predicted


class MaskedAccuracy:
    """``compute_metrics`` for ``Trainer(..., batch_eval_metrics=True)``: the fraction of
    masked positions whose token is predicted, accumulated batch by batch (nothing of the
    evaluation set is held), fed by :func:`masked_predictions`."""

    def __init__(self):
        self.correct = self.total = 0

    def __call__(self, eval_pred, compute_result: bool = True) -> dict | None:
        predicted = torch.as_tensor(eval_pred.predictions)
        labels = torch.as_tensor(eval_pred.label_ids)
        targets = labels != IGNORE_INDEX
        self.correct += int((predicted[targets] == labels[targets]).sum())
        self.total += int(targets.sum())
        if not compute_result:
            return None
        result = {
            "accuracy": self.correct / self.total if self.total else float("nan"),
            "n_masked": self.total,
        }
        self.correct = self.total = 0
        return result
