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
# tl.evaluate: uns table (results, provenance, params); obsm X_pca_hvg / X_pca_unintegrated.
EVALUATE = "scgf_evaluate"
# tl.attention: layers (cells × genes), varp (top-k gene pairs and their cell counts), uns params.
ATTENTION = "scgf_attention"
# tl.predict: obs[PREDICTION] (categorical), obsm[f"{PREDICTION}_proba"], uns classes/params;
# tl.finetune also writes its held-out predictions to obs[PREDICTION].
PREDICTION = "scgf_pred"
# tl.finetune: uns[FINETUNE] (params, tasks, metrics, history, search) and obs[SPLIT].
FINETUNE = "scgf_finetune"
SPLIT = "scgf_split"
# tl.finetune_genes: uns[FINETUNE_GENES] (params, classes, folds, metrics, genes table).
FINETUNE_GENES = "scgf_finetune_genes"
# tl.predict_genes: var[GENE_PRED] (categorical), var[f"{GENE_PRED}_n_cells"],
# varm[f"{GENE_PRED}_proba"], uns[GENE_PRED] (params, classes).
GENE_PRED = "scgf_gene_pred"
# Unfinished results inside a backed .h5ad file: a top-level group anndata never reads.
PARTIAL_GROUP = "scgf_partial"
