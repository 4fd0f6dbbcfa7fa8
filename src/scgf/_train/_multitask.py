"""A shared BERT encoder with one classification head per task (multi-task cell labels).

Unlike the reference's multi-task model, whose encoder is built from the checkpoint's config
only (random weights), :meth:`MultiTaskClassifier.from_backbone` loads the pretrained
encoder weights and checks that every one of them was found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel, BertPreTrainedModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ._data import IGNORE_INDEX

POOLINGS = ("cls", "attention")
TASK = "multitask_cell_classification"


@dataclass
class MultiTaskOutput(ModelOutput):
    """``loss`` (with labels) and ``logits``: one (batch, classes) tensor per task, in the
    config's task order."""

    loss: torch.Tensor | None = None
    logits: tuple[torch.Tensor, ...] | None = None


def head_name(task: str) -> str:
    """The ``heads`` key of a task (module names cannot contain ``.``)."""
    return task.replace(".", "_")


class AttentionPooling(nn.Module):
    """A learned query scores every real position; the cell is the softmax-weighted sum of
    its hidden states (padding gets weight 0)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (hidden @ self.query.to(hidden.dtype)).float()
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = F.softmax(scores, dim=1).to(hidden.dtype)
        return torch.einsum("bp,bph->bh", weights, hidden)


def check_tasks(
    tasks: Mapping[str, Sequence[str]], task_weights: Sequence[float] | None
) -> tuple[dict[str, list[str]], list[float] | None]:
    """Validate tasks ({name: classes}) and weights; returns them as plain JSON types."""
    tasks = {str(t): [str(c) for c in classes] for t, classes in dict(tasks).items()}
    if not tasks:
        raise ValueError("A multi-task classifier needs at least one task; got none.")
    small = {t: c for t, c in tasks.items() if len(c) < 2}
    if small:
        raise ValueError(f"Every task needs at least 2 classes; these have fewer: {small}.")
    names = [head_name(t) for t in tasks]
    if len(set(names)) < len(names) or "" in names:
        raise ValueError(
            f"Task names {list(tasks)} are empty or clash once '.' becomes '_'; rename them."
        )
    if task_weights is None:
        return tasks, None
    if isinstance(task_weights, Mapping):
        missing = set(tasks) - set(task_weights)
        if missing:
            raise ValueError(f"task_weights has no weight for the task(s) {sorted(missing)}.")
        task_weights = [task_weights[t] for t in tasks]
    weights = [float(w) for w in task_weights]
    if len(weights) != len(tasks) or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            f"task_weights={list(task_weights)}: give one finite, non-negative weight per task "
            f"({len(tasks)}: {', '.join(tasks)})."
        )
    return tasks, weights


class MultiTaskClassifier(BertPreTrainedModel):
    """A ``BertModel`` shared by one linear classification head per task.

    The config is the encoder's ``BertConfig`` plus ``scgf_tasks`` ({task: [class names in
    logit order]}), ``scgf_pooling`` (``"cls"``: position 0; ``"attention"``: a learned
    query over the real positions) and ``scgf_task_weights`` (one loss weight per task, or
    ``None`` for 1 each). Heads are Xavier-uniform with zero bias, as the reference's.

    ``forward(input_ids, attention_mask, labels=None)``: ``labels`` is (batch, n_tasks), class
    ids with ``-100`` where a cell has no label for a task; the loss is the weighted sum over
    tasks of the cross-entropy of each task's labelled cells.
    """

    accepts_loss_kwargs = False  # the loss is a mean per task; Trainer scales accumulation

    def __init__(self, config: BertConfig):
        super().__init__(config)
        tasks, weights = check_tasks(config.scgf_tasks, getattr(config, "scgf_task_weights", None))
        pooling = getattr(config, "scgf_pooling", "cls")
        if pooling not in POOLINGS:
            raise ValueError(f"scgf_pooling={pooling!r}; use 'cls' or 'attention'.")
        config.scgf_tasks, config.scgf_task_weights, config.scgf_pooling = tasks, weights, pooling
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.pool = AttentionPooling(config.hidden_size) if pooling == "attention" else None
        self.heads = nn.ModuleDict(
            {head_name(t): nn.Linear(config.hidden_size, len(c)) for t, c in tasks.items()}
        )
        self.post_init()

    @property
    def tasks(self) -> dict[str, list[str]]:
        """{task: class names}, in logit order."""
        return dict(self.config.scgf_tasks)

    def head(self, task: str) -> nn.Linear:
        """The head of ``task``."""
        return self.heads[head_name(task)]

    def _init_weights(self, module):
        if isinstance(module, AttentionPooling):
            init.normal_(module.query, std=self.config.initializer_range)
        elif isinstance(module, nn.Linear) and any(module is h for h in self.heads.values()):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The cell vector the heads read: ``<cls>`` (position 0) or attention pooling."""
        if self.pool is None:
            return hidden[:, 0]
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return self.pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MultiTaskOutput:
        kwargs.pop("return_dict", None)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
        cell = self.dropout(self.pooled(hidden, attention_mask))
        logits = tuple(self.heads[head_name(t)](cell) for t in self.config.scgf_tasks)
        loss = None if labels is None else self.loss(logits, labels)
        return MultiTaskOutput(loss=loss, logits=logits)

    def loss(self, logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Weighted sum over tasks of the mean cross-entropy of the labelled cells.

        A task without any labelled cell in the batch adds 0 (its head gets a zero gradient,
        which keeps distributed training's gradient buckets complete).
        """
        labels = labels.view(-1, len(logits))
        weights = self.config.scgf_task_weights or [1.0] * len(logits)
        total = logits[0].new_zeros((), dtype=torch.float32)
        for i, (task_logits, weight) in enumerate(zip(logits, weights, strict=True)):
            target = labels[:, i].long()
            summed = F.cross_entropy(
                task_logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            n = (target != IGNORE_INDEX).sum().clamp(min=1)
            total = total + weight * summed / n
        return total

    @classmethod
    def from_backbone(
        cls,
        model,
        tasks: Mapping[str, Sequence[str]],
        *,
        pooling: str = "cls",
        task_weights: Sequence[float] | Mapping[str, float] | None = None,
        dropout: float | None = None,
        config_overrides: Mapping | None = None,
        **load_kwargs,
    ) -> MultiTaskClassifier:
        """A multi-task classifier whose encoder holds ``model``'s pretrained weights.

        Parameters
        ----------
        model
            Anything :func:`scgf.models.resolve` accepts (a registry name, a checkpoint or
            fine-tuned folder, an adapter folder, a loaded transformers model).
        tasks
            {task: [class names in logit order]}.
        pooling
            ``"cls"`` or ``"attention"``.
        task_weights
            One loss weight per task (a list in task order or a {task: weight} dict);
            ``None`` weighs every task 1.
        dropout
            Dropout before the heads; defaults to the config's ``hidden_dropout_prob``.
        config_overrides
            Config fields to change, e.g. :func:`scgf._train.config_overrides` (attention
            dropout while training).
        **load_kwargs
            Passed to ``from_pretrained`` when the weights are read from a folder, e.g.
            :func:`scgf._train._lora.quantized_backbone_kwargs` (``dtype`` defaults to
            float32 and ``attn_implementation`` to ``"sdpa"``).

        Returns
        -------
        The model (training mode is left to the caller).
        """
        from .._engine._loading import encoder_of, load_model
        from ..models import resolve

        tasks, weights = check_tasks(tasks, task_weights)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; use 'cls' or 'attention'.")
        extra = {
            **dict(config_overrides or {}),
            "scgf_tasks": tasks,
            "scgf_pooling": pooling,
            "scgf_task_weights": weights,
        }
        if dropout is not None:
            extra["classifier_dropout"] = float(dropout)
        if isinstance(model, PreTrainedModel):
            encoder = encoder_of(model)
        else:
            record = resolve(model)
            if record.kind in ("registry", "folder"):
                return cls._from_folder(record, extra, load_kwargs)
            # an adapter folder: its merged encoder
            encoder = load_model(record.name, device=torch.device("cpu")).encoder
        config = BertConfig.from_dict({**encoder.config.to_dict(), **extra})
        config._attn_implementation = encoder.config._attn_implementation
        classifier = cls(config)
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        classifier.bert.load_state_dict(state, strict=True)
        return classifier

    @classmethod
    def _from_folder(cls, record, extra: dict, load_kwargs: dict) -> MultiTaskClassifier:
        from transformers.utils import logging as hf_logging

        config = BertConfig.from_pretrained(record.folder)
        config.update(extra)
        config.architectures = [cls.__name__]
        load_kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa", **load_kwargs}
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the heads are new on purpose
        try:
            classifier, info = cls.from_pretrained(
                record.folder,
                config=config,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **load_kwargs,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info["missing_keys"] if k.startswith("bert.")]
        mismatched = [k for k in info.get("mismatched_keys") or [] if str(k).startswith("bert.")]
        if missing or mismatched:
            raise ValueError(
                f"{record.name} does not hold a BERT encoder this model can start from: "
                f"{len(missing)} encoder weights were missing (e.g. {missing[:3]}) and "
                f"{len(mismatched)} had another shape. Pass a Geneformer "
                "checkpoint (BertForMaskedLM or a fine-tuned BERT classifier)."
            )
        return classifier
