"""Optional dependencies, imported when a feature needs them, with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> (pip extra of scgf, what it is needed for)
EXTRAS: dict[str, tuple[str, str]] = {
    "bitsandbytes": ("quant", "8-bit and 4-bit weights (quantize=)"),
    "accelerate": ("train", "Training with transformers.Trainer"),
    "scib_metrics": ("eval", "Scoring embeddings (scgf.tl.evaluate)"),
    "peft": ("train", "LoRA fine-tuning and adapter folders"),
    "optuna": ("train", "Hyperparameter search (n_trials=)"),
    "crick": ("vocab", "Gene medians by t-digest (method='tdigest')"),
    "datasets": ("pretrain", "Pretraining on files without tokens or on Hugging Face datasets"),
}


def import_optional(module: str, *, feature: str | None = None) -> ModuleType:
    """Import an optional dependency or raise an ``ImportError`` naming the extra to install.

    Parameters
    ----------
    module
        The module to import, e.g. ``"bitsandbytes"``.
    feature
        What the caller wanted to do, for the message; defaults to the module's entry in
        :data:`EXTRAS`.

    Returns
    -------
    The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra, default_feature = EXTRAS.get(module, (None, module))
        install = f"pip install 'scgf[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(
            f"{feature or default_feature} needs the optional package {module!r}, which is not "
            f"installed ({err}). Install it with: {install}"
        ) from err
