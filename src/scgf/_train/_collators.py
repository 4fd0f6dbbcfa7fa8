"""Collators: right-padding to each batch's longest cell, labels padded with ``-100``, and
masked-language-model masking by transformers' own collator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..vocab import Vocabulary
from ._data import IGNORE_INDEX


def pad_right(sequences: list[torch.Tensor], value: int) -> torch.Tensor:
    """Stack 1-d tensors into (batch, longest), right-padded with ``value``."""
    return torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=value)


def _inputs(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    ids = [e["input_ids"] for e in examples]
    lengths = torch.tensor([len(x) for x in ids])
    width = int(lengths.max())
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": pad_right(ids, pad_id), "attention_mask": mask}


@dataclass
class ClassificationCollator:
    """Pads a batch of cells; ``labels`` (one class per cell) are stacked."""

    pad_id: int = 0

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = _inputs(examples, self.pad_id)
        if "labels" in examples[0]:
            batch["labels"] = torch.stack([e["labels"] for e in examples])
        return batch


@dataclass
class TokenClassificationCollator:
    """Pads a batch of cells and their per-token labels (``-100`` at padding)."""

    pad_id: int = 0

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = _inputs(examples, self.pad_id)
        batch["labels"] = pad_right([e["labels"] for e in examples], IGNORE_INDEX)
        return batch


def vocabulary_tokenizer(vocab: Vocabulary, *, protect_cls_eos: bool = False):
    """A transformers tokenizer over a Geneformer vocabulary (word level, one token per gene).

    It exists so that transformers' collators can pad and mask scgf's token ids; cells are
    never tokenized from text. Its special tokens are ``<pad>`` and ``<mask>``, as in the
    reference pretrainer, plus ``<cls>``/``<eos>`` with ``protect_cls_eos``.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    for needed in ("<pad>", "<mask>"):
        if needed not in vocab.token_ids:
            raise ValueError(f"The {vocab.name} vocabulary has no {needed} token to train with.")
    backend = Tokenizer(WordLevel(dict(vocab.token_ids), unk_token="<pad>"))
    extra = {}
    if protect_cls_eos and vocab.special_tokens:
        extra = {"cls_token": "<cls>", "eos_token": "<eos>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", mask_token="<mask>", **extra
    )


def masked_lm_collator(
    vocab: Vocabulary,
    *,
    mlm_probability: float = 0.15,
    mask_cls_eos: bool = True,
    seed: int | None = None,
):
    """transformers' ``DataCollatorForLanguageModeling`` over a Geneformer vocabulary.

    Geneformer's pretraining semantics (spec §7): 15 % of the positions are chosen, of those
    80 % become ``<mask>``, 10 % a random token and 10 % stay; labels are ``-100`` elsewhere;
    padding is never chosen. ``<cls>``/``<eos>`` can be chosen like any gene, as in the
    reference (its only special tokens are ``<pad>`` and ``<mask>``); ``mask_cls_eos=False``
    protects them.

    Parameters
    ----------
    vocab
        The vocabulary the model reads.
    mlm_probability
        Fraction of positions chosen.
    mask_cls_eos
        Whether ``<cls>``/``<eos>`` may be chosen (the reference's behaviour).
    seed
        Seed of the masking (``None``: torch's global generator).
    """
    from transformers import DataCollatorForLanguageModeling

    tokenizer = vocabulary_tokenizer(vocab, protect_cls_eos=not mask_cls_eos)
    return DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed
    )
