"""Loading a resolved model onto a device: the encoder alone, or the model with its head."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from transformers.utils import logging as hf_logging

from .._optional import import_optional
from ..models import ModelRecord, resolve
from ..vocab import Vocabulary

QUANTIZE_OPTIONS = (None, "8bit", "4bit")
# The transformers class that holds the head of each task.
HEAD_CLASSES = {
    "masked_lm": BertForMaskedLM,
    "cell_classification": BertForSequenceClassification,
    "gene_classification": BertForTokenClassification,
}


@dataclass
class LoadedModel:
    """A model on its device in evaluation mode, with its :class:`~scgf.models.ModelRecord`.

    ``model`` is what was loaded: the bare encoder (``BertModel``) unless the head was asked
    for; ``encoder`` is the ``BertModel`` inside it either way.
    """

    model: torch.nn.Module
    record: ModelRecord
    device: torch.device

    @property
    def encoder(self) -> BertModel:
        return encoder_of(self.model)

    @property
    def vocab(self) -> Vocabulary:
        return self.record.vocabulary

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def n_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def describe(self) -> dict:
        """Parameters that identify the model in ``adata.uns``."""
        return self.record.describe()


def encoder_of(model: torch.nn.Module) -> BertModel:
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


def quantization_config(quantize: str | None, device: torch.device):
    """The ``BitsAndBytesConfig`` of ``quantize`` (``None``, ``"8bit"``, ``"4bit"``)."""
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"quantize={quantize!r}; use None, '8bit' or '4bit'.")
    if quantize is None:
        return None
    if device.type != "cuda":
        raise ValueError(
            f"quantize={quantize!r} needs a CUDA GPU (bitsandbytes), but the device is "
            f"{device.type}. Drop quantize= to run in full precision on this device."
        )
    import_optional("bitsandbytes", feature="quantize=")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def _head_class(record: ModelRecord):
    if record.task == "multitask_cell_classification":
        from .._train._multitask import MultiTaskClassifier

        return MultiTaskClassifier
    if record.task not in HEAD_CLASSES:
        raise ValueError(
            f"{record.name} is a {record.task or 'model of unknown task'} checkpoint without a "
            f"task head scgf can read (config architectures: "
            f"{(record.config or {}).get('architectures')}); a fine-tuned classifier is needed."
        )
    return HEAD_CLASSES[record.task]


def load_model(
    model,
    *,
    device: torch.device,
    quantize: str | None = None,
    head: bool = False,
    vocabulary: Vocabulary | None = None,
) -> LoadedModel:
    """Load ``model`` in evaluation mode on ``device``.

    Parameters
    ----------
    model
        Anything :func:`scgf.models.resolve` accepts: a registry name, a local checkpoint
        folder (pretrained, fine-tuned or multi-task), a LoRA adapter folder (its base model
        is loaded, the adapter applied and merged into it: exact full-precision weights), or
        a loaded transformers model.
    device
        Where to run.
    quantize
        ``"8bit"``/``"4bit"`` weights through bitsandbytes (CUDA only).
    head
        Keep the model's task head (classifier or MLM head). Without it only the encoder is
        loaded, and head weights in the checkpoint are skipped on purpose.
    vocabulary
        The vocabulary; defaults to the model's.

    Returns
    -------
    The loaded model.
    """
    record = resolve(model, vocabulary=vocabulary)
    if record.kind == "loaded":
        if quantize is not None:
            raise ValueError("quantize= applies when scgf loads the model; pass a name or folder.")
        module = record.model if head else encoder_of(record.model)
        return LoadedModel(module.to(device).eval(), record, device)
    if record.adapter is not None:
        from ._adapters import load_adapter

        return load_adapter(record, device=device, quantize=quantize, head=head)

    model_class = _head_class(record) if head else BertModel
    quantization = quantization_config(quantize, device)
    kwargs: dict = {"attn_implementation": "sdpa"}
    if model_class is BertModel:
        kwargs["add_pooling_layer"] = False
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": device.index or 0})
    verbosity = hf_logging.get_verbosity()
    if not head:
        hf_logging.set_verbosity_error()  # the head's weights are left out on purpose
    hf_logging.disable_progress_bar()
    try:
        loaded = model_class.from_pretrained(os.fspath(record.folder), **kwargs)
    except (ImportError, ValueError):
        raise
    except Exception as err:  # safetensors, pickle and torch raise many kinds on bad files
        raise ValueError(
            f"Could not load the checkpoint {record.name} from {record.folder} "
            f"({type(err).__name__}: {err}). Its weight file may be corrupt or incomplete: "
            "for a registry model delete the cached copy and fetch it again (scgf fetch "
            "NAME); for a folder, save or copy the model again."
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if quantization is None:
        loaded = loaded.to(device)
    return LoadedModel(loaded.eval(), record, device)


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
