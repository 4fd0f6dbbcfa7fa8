"""Plots of scgf results, drawn through scanpy/matplotlib."""

from ._attention import attention
from ._embedding import embedding
from ._perturbation import perturbation

__all__ = ["attention", "embedding", "perturbation"]

from ._classification import confusion_matrix, roc, training_history

__all__ += ["confusion_matrix", "roc", "training_history"]

from ._evaluation import evaluation  # noqa: E402

__all__ += ["evaluation"]
