"""LoRA and QLoRA fine-tuning through peft, and adapter folders.

Adapters go on every linear layer of the encoder (attention query, key, value and output,
and both feed-forward layers): the QLoRA study (Dettmers et al. 2023) found adapters on all
linear layers needed to match full fine-tuning, while peft's BERT default (query and value
only, which is what the reference ends up with) trails it. The layers a fine-tuned model adds
on top of the checkpoint (the classifier, the sequence classifier's pooler, which Geneformer's
masked-LM checkpoints do not have, and the multi-task heads and pooling) are trained in full
and saved with the adapter.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from .._optional import import_optional

ADAPTER_CONFIG = "adapter_config.json"
QUANTIZE_OPTIONS = (None, "4bit", "8bit")
# Every linear layer inside the encoder's layers (not the pooler, heads or MLM head).
DEFAULT_TARGET_MODULES = (
    r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)"
)
# Layers on top of the encoder, kept in full precision when the backbone is quantized (they
# are trained in full): classifier, pooler, multi-task heads and pooling, masked-LM head.
HEAD_MODULES = ("classifier", "bert.pooler", "heads", "pool", "cls")
# scgf task -> peft task type (None: a custom model, heads listed in modules_to_save).
TASK_TYPES = {
    "cell_classification": "SEQ_CLS",
    "gene_classification": "TOKEN_CLS",
    "multitask_cell_classification": None,
}


def _task_of(model) -> str:
    from .._engine._loading import encoder_of
    from ..models._resolve import TASKS

    encoder_of(model)  # a clear TypeError for a model without a BERT encoder
    return TASKS.get(type(model).__name__)


def _modules_to_save(model, task: str) -> list[str]:
    if task == "multitask_cell_classification":
        heads = [f"heads.{name}" for name in model.heads]
        return heads + (["pool"] if model.pool is not None else [])
    saved = ["classifier"]
    if task == "cell_classification" and getattr(model.bert, "pooler", None) is not None:
        saved.append("bert.pooler")
    return saved


def apply_lora(
    model,
    *,
    task: str | None = None,
    r: int = 64,
    alpha: int = 128,
    dropout: float = 0.1,
    target_modules: str | list[str] | None = None,
):
    """Wrap a classifier for LoRA training (peft): only the adapters and the head train.

    Parameters
    ----------
    model
        A ``BertForSequenceClassification`` (``task="cell_classification"``), a
        ``BertForTokenClassification`` (``"gene_classification"``) or a
        :class:`~scgf._train._multitask.MultiTaskClassifier`
        (``"multitask_cell_classification"``), possibly loaded quantized
        (:func:`quantized_backbone_kwargs`: QLoRA).
    task
        The scgf task; defaults to the one the model's class implies.
    r, alpha, dropout
        LoRA rank, scaling (``alpha / r``) and dropout; the reference's defaults.
    target_modules
        peft's ``target_modules`` (names or a regular expression); default
        :data:`DEFAULT_TARGET_MODULES`, every linear layer of the encoder.

    Returns
    -------
    The ``peft.PeftModel``.
    """
    peft = import_optional("peft", feature="LoRA fine-tuning")
    inferred = _task_of(model)
    task = task or inferred
    if task not in TASK_TYPES or (inferred is not None and task != inferred):
        raise ValueError(
            f"task={task!r} does not fit a {type(model).__name__}; LoRA fine-tunes a "
            "BertForSequenceClassification (cell_classification), BertForTokenClassification "
            "(gene_classification) or MultiTaskClassifier (multitask_cell_classification)."
        )
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        task_type=TASK_TYPES[task],
        target_modules=target_modules or DEFAULT_TARGET_MODULES,
        modules_to_save=_modules_to_save(model, task),
    )
    if getattr(model, "is_quantized", False):
        # QLoRA: norms and the unquantized layers to float32, inputs needing gradients.
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.enable_input_require_grads()  # frozen embeddings still pass gradients back
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        return peft.get_peft_model(model, config)


def quantized_backbone_kwargs(quantize: str | None, device) -> dict:
    """``from_pretrained`` keyword arguments that load the backbone quantized.

    Parameters
    ----------
    quantize
        ``"4bit"``: NF4 with double quantization and bfloat16 compute (QLoRA, the
        reference's settings); ``"8bit"``: LLM.int8; ``None``: full precision (``{}``).
        The encoder's layers are quantized; the heads (:data:`HEAD_MODULES`) stay in full
        precision, since they are trained in full.
    device
        The training device; bitsandbytes needs a CUDA GPU.

    Returns
    -------
    ``{"quantization_config": BitsAndBytesConfig, "device_map": {"": gpu index}}`` or ``{}``.
    """
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(f"quantize={quantize!r}; use None, '4bit' (QLoRA) or '8bit'.")
    if quantize is None:
        return {}
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(
            f"quantize={quantize!r} (QLoRA) needs a CUDA GPU (bitsandbytes), but the device is "
            f"{device}. Use quantize=None (plain LoRA works on any device), or run on a CUDA "
            "machine."
        )
    import_optional("bitsandbytes", feature=f"quantize={quantize!r} (QLoRA)")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(HEAD_MODULES))
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=list(HEAD_MODULES),
        )
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def is_adapter_folder(folder) -> bool:
    """Whether ``folder`` holds a peft adapter (``adapter_config.json``)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def save_adapter(model, folder, *, base_model: str | None = None) -> Path:
    """Save a LoRA model's adapter and trained head, and the fine-tuned model's config.

    The folder gets peft's ``adapter_config.json`` and ``adapter_model.safetensors`` (the
    adapters plus the fully trained head layers) and the ``config.json`` of the model with
    its head (classes, tasks), without quantization settings: with the base model it
    rebuilds the fine-tuned model. ``scgf.json`` (written by the caller) names the base
    model for scgf; ``base_model`` also goes into the adapter config for plain peft.

    Parameters
    ----------
    model
        The ``peft.PeftModel`` from :func:`apply_lora`.
    folder
        Where to save (created).
    base_model
        The base model as the user named it (registry name or folder).

    Returns
    -------
    The folder.
    """
    peft = import_optional("peft", feature="LoRA adapters")
    if not isinstance(model, peft.PeftModel):
        raise TypeError(
            f"save_adapter needs a peft.PeftModel (from apply_lora); got {type(model).__name__}."
        )
    folder = Path(folder)
    if base_model is not None:
        for config in model.peft_config.values():
            config.base_model_name_or_path = str(base_model)
    # Embeddings are never trained here; False also spares peft a hub lookup of base_model.
    model.save_pretrained(folder, save_embedding_layers=False)
    base = model.get_base_model()
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]
    values = config.to_dict()
    values.pop("quantization_config", None)
    values.pop("_name_or_path", None)
    (folder / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return folder
