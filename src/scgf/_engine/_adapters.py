"""Loading a LoRA adapter folder: the base checkpoint, the adapter on top, merged.

Merging (``merge_and_unload``) folds each adapter into its layer's weight, so inference
runs a plain transformers model in full precision: the same speed as the base model, and
every readout (embeddings, logits, attention, perturbation) works unchanged.
"""

from __future__ import annotations

import os
import warnings

import torch
from transformers import BertConfig, BertModel
from transformers.utils import logging as hf_logging

from .._optional import import_optional
from ..models import ModelRecord
from ._loading import LoadedModel, _head_class, encoder_of


def _model_class(record: ModelRecord):
    if record.task == "encoder":
        return BertModel
    return _head_class(record)


def load_adapter(
    record: ModelRecord, *, device: torch.device, quantize: str | None, head: bool
) -> LoadedModel:
    """The merged model of an adapter record (``record.adapter``) on ``device``.

    The model class is the fine-tuned model's (its ``config.json`` in the adapter folder);
    without ``head`` its encoder is returned after merging.
    """
    if quantize is not None:
        raise ValueError(
            f"quantize={quantize!r} does not apply to the adapter folder {record.name}: its "
            "adapter is merged into full-precision weights. Drop quantize=."
        )
    peft = import_optional("peft", feature="LoRA adapter folders")
    model_class = _model_class(record)
    config = BertConfig.from_dict(dict(record.config))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head comes from the adapter, not the base
    hf_logging.disable_progress_bar()
    try:
        base = model_class.from_pretrained(
            os.fspath(record.base.folder),
            config=config,
            dtype=torch.float32,
            attn_implementation="sdpa",
        )
        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            adapted = peft.PeftModel.from_pretrained(base, os.fspath(record.folder))
        merged = adapted.merge_and_unload()
    except (ImportError, ValueError):
        raise
    except Exception as err:  # safetensors, peft and torch raise many kinds on bad files
        raise ValueError(
            f"Could not load the adapter folder {record.name} onto its base model "
            f"{record.base.name} ({type(err).__name__}: {err}). The adapter may belong to "
            "another base model, or its files may be damaged: save the adapter again."
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    module = merged if head else encoder_of(merged)
    return LoadedModel(module.to(device).eval(), record, device)
