"""Loading a Geneformer encoder from a registry name, a folder or a transformers model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pooch
import torch
from transformers import BertConfig, BertModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from ..models import get_vocabulary, lookup
from ..models._resolve import fetch
from ..vocab import Vocabulary

QUANTIZE_OPTIONS = (None, "8bit", "4bit")


@dataclass
class LoadedModel:
    """A ready-to-run encoder with what is needed to describe results."""

    encoder: BertModel
    vocab: Vocabulary
    name: str
    revision: str | None
    sha256: str | None
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def describe(self) -> dict:
        """Parameters that identify the model in ``adata.uns``."""
        info = {"model": self.name, "revision": self.revision, "sha256": self.sha256}
        return {k: v for k, v in info.items() if v is not None}


def _weight_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return folder / name
    return None


def _quantization_config(quantize: str | None, device: torch.device):
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"quantize={quantize!r}; use None, '8bit' or '4bit'.")
    if quantize is None:
        return None
    if device.type != "cuda":
        raise ValueError(
            f"quantize={quantize!r} needs a CUDA GPU (bitsandbytes), but the device is "
            f"{device.type}. Drop quantize= to run in full precision on this device."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("quantize= needs bitsandbytes: pip install 'scgf[quant]'") from None
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def _encoder_of(model: PreTrainedModel) -> BertModel:
    """The BERT encoder inside a pretrained or fine-tuned transformers model."""
    if isinstance(model, BertModel):
        return model
    encoder = getattr(model, "bert", None)
    if isinstance(encoder, BertModel):
        return encoder
    raise TypeError(
        f"{type(model).__name__} holds no BERT encoder; pass a Geneformer BertForMaskedLM, "
        "BertForSequenceClassification, BertForTokenClassification or BertModel."
    )


def load_model(
    model,
    *,
    device: torch.device,
    quantize: str | None = None,
    vocabulary: Vocabulary | None = None,
) -> LoadedModel:
    """Load the encoder of ``model`` in evaluation mode on ``device``.

    Parameters
    ----------
    model
        A registry name, a local checkpoint folder, or a loaded transformers model.
    device
        Where to run.
    quantize
        ``"8bit"``/``"4bit"`` weights through bitsandbytes (CUDA only).
    vocabulary
        The vocabulary; defaults to the model's (for a loaded model: the published one its
        config's shape matches).

    Returns
    -------
    The loaded model.
    """
    if isinstance(model, PreTrainedModel):
        if quantize is not None:
            raise ValueError("quantize= applies when scgf loads the model; pass a name or folder.")
        encoder = _encoder_of(model)
        vocab = vocabulary or _vocabulary_of_config(encoder.config)
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        encoder = encoder.to(device).eval()
        return LoadedModel(encoder, vocab, name, None, None, device)

    entry = lookup(model) if isinstance(model, str) else None
    if entry is not None:
        folder = fetch(entry.name)
        name, revision, sha = entry.name, entry.revision, entry.weight_file.sha256
    else:
        folder = Path(model)
        if not folder.is_dir():
            get_vocabulary(model)  # raises the registry's clear unknown-model error
        weights = _weight_file(folder)
        if weights is None:
            raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin.")
        name, revision, sha = str(folder), None, pooch.file_hash(str(weights), alg="sha256")
    vocab = vocabulary or get_vocabulary(folder if entry is None else entry.name)
    quantization = _quantization_config(quantize, device)
    kwargs: dict = {"add_pooling_layer": False, "attn_implementation": "sdpa"}
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": device.index or 0})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # MLM/classifier head weights are unused on purpose
    hf_logging.disable_progress_bar()
    try:
        encoder = BertModel.from_pretrained(os.fspath(folder), **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if quantization is None:
        encoder = encoder.to(device)
    return LoadedModel(encoder.eval(), vocab, name, revision, sha, device)


def _vocabulary_of_config(config: BertConfig) -> Vocabulary:
    shape = (config.vocab_size, config.max_position_embeddings)
    if shape == (20275, 4096):
        return get_vocabulary("gc104M")
    if shape == (25426, 2048):
        return get_vocabulary("gc30M")
    raise ValueError(
        f"The model has vocab_size={shape[0]}, max_position_embeddings={shape[1]}, which match "
        "no published vocabulary; pass vocabulary=scgf.vocab.Vocabulary.from_files(...)."
    )


def truncated_encoder(encoder: BertModel, n_layers: int) -> BertModel:
    """A BertModel sharing ``encoder``'s weights that runs only its first ``n_layers`` layers.

    The layers above the one read, the pooler and any head are never run.
    """
    if n_layers == len(encoder.encoder.layer):
        return encoder
    config = BertConfig.from_dict(encoder.config.to_dict())
    config.num_hidden_layers = n_layers
    config._attn_implementation = encoder.config._attn_implementation
    with torch.device("meta"):
        trunk = BertModel(config, add_pooling_layer=False)
    trunk.embeddings = encoder.embeddings
    trunk.encoder.layer = torch.nn.ModuleList(list(encoder.encoder.layer)[:n_layers])
    return trunk.eval()
