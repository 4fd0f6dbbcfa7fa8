"""The model to fine-tune: a pretrained encoder with a new classification head (one task, or
one head per task), optionally with frozen layers, LoRA adapters or a 4-bit backbone."""

from __future__ import annotations

from collections.abc import Mapping

LORA_DEFAULTS = {"r": 64, "alpha": 128, "dropout": 0.1}  # the reference's QLoRA settings


def lora_settings(lora: bool | Mapping | None, quantize: str | None) -> dict | None:
    """LoRA keyword arguments of :func:`scgf._train._lora.apply_lora`, or ``None``.

    ``quantize="4bit"`` (QLoRA) implies LoRA: a quantized backbone cannot be trained itself.
    """
    if lora is None or lora is False:
        return dict(LORA_DEFAULTS) if quantize is not None else None
    if lora is True:
        return dict(LORA_DEFAULTS)
    if not isinstance(lora, Mapping):
        raise TypeError(f"lora={lora!r}; use True, False or a dict of LoRA settings.")
    allowed = {"r", "alpha", "dropout", "target_modules"}
    unknown = set(lora) - allowed
    if unknown:
        raise ValueError(f"lora has unknown settings {sorted(unknown)}; use {sorted(allowed)}.")
    return {**LORA_DEFAULTS, **dict(lora)}


def _load_kwargs(quantize_kwargs: dict) -> dict:
    import torch

    return {"dtype": torch.float32, "attn_implementation": "sdpa", **quantize_kwargs}


def single_task(
    record, model, classes: list[str], quantize_kwargs: dict, overrides: dict | None = None
):
    """``BertForSequenceClassification`` with the checkpoint's encoder and a new head;
    ``overrides`` are config fields to change (:func:`scgf._train.config_overrides`)."""
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    labels = {
        "num_labels": len(classes),
        "id2label": dict(enumerate(classes)),
        "label2id": {c: i for i, c in enumerate(classes)},
        **dict(overrides or {}),
    }
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
    try:
        if record.kind in ("registry", "folder") and getattr(record, "adapter", None) is None:
            config = BertConfig.from_pretrained(record.folder, **labels)
            config.architectures = ["BertForSequenceClassification"]
            classifier, info = BertForSequenceClassification.from_pretrained(
                record.folder,
                config=config,
                ignore_mismatched_sizes=True,  # a fine-tuned model's head of other classes
                output_loading_info=True,
                **_load_kwargs(quantize_kwargs),
            )
            missing = [k for k in info["missing_keys"] if k.startswith("bert.encoder")]
            if missing:
                raise ValueError(
                    f"{record.name} does not hold a BERT encoder to fine-tune: "
                    f"{len(missing)} encoder weights were missing (e.g. {missing[:3]})."
                )
            return classifier
        # A loaded model or an adapter folder: take its (merged) encoder.
        from ..._engine._loading import load_model

        encoder = load_model(record.model or model, device=_cpu()).encoder
        config = BertConfig.from_dict({**encoder.config.to_dict(), **labels})
        config.architectures = ["BertForSequenceClassification"]
        classifier = BertForSequenceClassification(config)
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        result = classifier.bert.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
        if missing:
            raise ValueError(f"{record.name}: encoder weights missing: {missing[:3]}.")
        return classifier
    finally:
        hf_logging.set_verbosity(verbosity)


def _cpu():
    import torch

    return torch.device("cpu")


def freeze(model, n_layers: int) -> None:
    """Freeze the embeddings and the first ``n_layers`` encoder layers (0: nothing).

    The reference freezes ``bert.encoder.layer[:k]`` only; the embeddings below them are
    frozen here too, since nothing below a frozen layer can learn usefully through it.
    """
    if n_layers <= 0:
        return
    prefixes = ["embeddings."] + [f"encoder.layer.{i}." for i in range(n_layers)]
    for name, parameter in model.named_parameters():
        inner = name.split("bert.", 1)[-1] if "bert." in name else None
        if inner is not None and any(inner.startswith(p) for p in prefixes):
            parameter.requires_grad_(False)


def build(
    record,
    model,
    tasks: dict[str, list[str]],
    *,
    multitask: bool,
    pooling: str,
    task_weights,
    freeze_layers: int,
    lora: dict | None,
    quantize_kwargs: dict,
    config_overrides: dict | None = None,
):
    """The model to train (called by ``Trainer`` through ``model_init``, after seeding);
    ``config_overrides`` change the checkpoint's config (e.g. attention dropout)."""
    if multitask:
        from ..._train._multitask import MultiTaskClassifier

        classifier = MultiTaskClassifier.from_backbone(
            record.folder if record.kind in ("registry", "folder") else model,
            tasks,
            pooling=pooling,
            task_weights=task_weights,
            config_overrides=config_overrides,
            **quantize_kwargs,
        )
        task = "multitask_cell_classification"
    else:
        (classes,) = tasks.values()
        classifier = single_task(record, model, classes, quantize_kwargs, config_overrides)
        task = "cell_classification"
    if lora is not None:
        from ..._train._lora import apply_lora

        classifier = apply_lora(classifier, task=task, **lora)
    freeze(classifier, freeze_layers)
    return classifier


def n_layers_of(record) -> int | None:
    """The checkpoint's number of encoder layers, from its config."""
    config = record.config or {}
    value = config.get("num_hidden_layers")
    return int(value) if value is not None else None
