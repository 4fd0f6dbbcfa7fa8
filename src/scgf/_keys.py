"""Every AnnData key scgf writes by default, in one place.

Each tool's ``key_added`` defaults to one of these; ``uns[key]["params"]`` always records the
call's parameters next to the result.
"""

# pp.tokenize: CSR token matrix (n_obs × context) and uns[TOKENS]["params"].
TOKENS = "gf_tokens"
# tl.embed: obsm (cells × hidden), varm with genes=True, uns params.
EMBEDDING = "X_geneformer"
# tl.perturb: uns table(s); layers (genes="all") or obsm (gene groups) per-cell scores.
PERTURB = "scgf_perturb"
# Unfinished results inside a backed .h5ad file: a top-level group anndata never reads.
PARTIAL_GROUP = "scgf_partial"
