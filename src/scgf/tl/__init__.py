"""Tools that run Geneformer models: embeddings and in silico perturbation."""

from ._attention import attention
from ._embed import embed
from ._perturb import perturb

__all__ = ["attention", "embed", "perturb"]

from ._predict import predict

__all__ += ["predict"]

from ._finetune import finetune  # noqa: E402

__all__ += ["finetune"]

from ._genes import finetune_genes, predict_genes  # noqa: E402

__all__ += ["finetune_genes", "predict_genes"]

from ._pretrain import pretrain  # noqa: E402

__all__ += ["pretrain"]

from ._evaluate import EmbeddingMismatchError, evaluate  # noqa: E402

__all__ += ["EmbeddingMismatchError", "evaluate"]
