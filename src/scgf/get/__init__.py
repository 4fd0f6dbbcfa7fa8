"""Tidy accessors for what scgf stores in AnnData."""

from ._attention import attention_df
from ._perturb import perturb_df
from ._tokens import check_token_vocabulary, token_matrix, token_params, tokens

__all__ = [
    "attention_df",
    "check_token_vocabulary",
    "perturb_df",
    "token_matrix",
    "token_params",
    "tokens",
]

from ._finetune import finetune_metrics_df, predictions_df, training_history_df

__all__ += ["finetune_metrics_df", "predictions_df", "training_history_df"]

from ._genes import gene_predictions_df  # noqa: E402

__all__ += ["gene_predictions_df"]

from ._evaluate import evaluation_df  # noqa: E402

__all__ += ["evaluation_df"]
