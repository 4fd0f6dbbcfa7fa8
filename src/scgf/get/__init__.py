"""Tidy accessors for what scgf stores in AnnData."""

from ._perturb import perturb_df
from ._tokens import check_token_vocabulary, token_matrix, token_params, tokens

__all__ = ["check_token_vocabulary", "perturb_df", "token_matrix", "token_params", "tokens"]
