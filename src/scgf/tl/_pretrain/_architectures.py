"""Named model shapes for pretraining from scratch: the published Geneformer checkpoints'.

A name gives the encoder's shape (layers, width, heads, feed-forward size, activation,
dropout, initialisation) as in the published ``config.json`` files (spec §3.2); the
vocabulary gives the rest (``vocab_size``, ``pad_token_id`` and ``max_position_embeddings``,
its context), so a shape can be trained with any vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import BertConfig

    from ...vocab import Vocabulary

# name -> (layers, hidden, heads, intermediate, dropout); every published config has relu,
# layer_norm_eps 1e-12, initializer_range 0.02, type_vocab_size 2, absolute positions.
ARCHITECTURES: dict[str, tuple[int, int, int, int, float]] = {
    "Geneformer-V1-10M": (6, 256, 4, 512, 0.02),
    "gf-12L-30M-i2048": (12, 512, 8, 1024, 0.02),
    "gf-12L-95M-i4096": (12, 512, 8, 1024, 0.02),
    "gf-20L-95M-i4096": (20, 896, 14, 1792, 0.02),
    "Geneformer-V2-104M": (12, 768, 12, 3072, 0.1),
    "Geneformer-V2-316M": (18, 1152, 18, 4608, 0.1),
}
ALIASES = {"gf-6L-30M-i2048": "Geneformer-V1-10M"}


def architecture_names() -> list[str]:
    """The named architectures (aliases included)."""
    return [*ARCHITECTURES, *ALIASES]


def architecture_config(architecture, vocab: Vocabulary) -> BertConfig:
    """The ``BertConfig`` to pretrain from scratch with ``vocab``.

    Parameters
    ----------
    architecture
        A name of :data:`ARCHITECTURES` (e.g. ``"Geneformer-V1-10M"``), a ``BertConfig``, or
        a dict of ``BertConfig`` fields.
    vocab
        The vocabulary the model will read: sets ``vocab_size`` (largest token id + 1) and
        ``pad_token_id``; a named shape also takes the vocabulary's context as
        ``max_position_embeddings``.

    Returns
    -------
    A new ``BertConfig``.
    """
    from transformers import BertConfig

    vocab_size = len(vocab.id_of_token)
    if isinstance(architecture, str):
        name = ALIASES.get(architecture, architecture)
        if name not in ARCHITECTURES:
            raise ValueError(
                f"Unknown architecture {architecture!r}. Named architectures: "
                f"{', '.join(architecture_names())}; or pass a transformers.BertConfig."
            )
        layers, hidden, heads, intermediate, dropout = ARCHITECTURES[name]
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            hidden_act="relu",
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=vocab.context_size,
            initializer_range=0.02,
            layer_norm_eps=1e-12,
            type_vocab_size=2,
            pad_token_id=vocab.pad_id,
        )
    if isinstance(architecture, dict):
        config = BertConfig(**architecture)
    elif isinstance(architecture, BertConfig):
        config = BertConfig.from_dict(architecture.to_dict())
    else:
        raise TypeError(
            f"architecture must be a name, a transformers.BertConfig or a dict, not "
            f"{type(architecture).__name__}."
        )
    if config.max_position_embeddings < vocab.context_size:
        raise ValueError(
            f"The architecture has max_position_embeddings={config.max_position_embeddings}, "
            f"but cells of the {vocab.name} vocabulary hold up to {vocab.context_size} tokens. "
            f"Set max_position_embeddings >= {vocab.context_size}."
        )
    config.vocab_size = vocab_size
    config.pad_token_id = vocab.pad_id
    return config
