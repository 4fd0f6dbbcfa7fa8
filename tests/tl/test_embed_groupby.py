"""scgf.tl.embed(groupby=): per-group gene embeddings equal genes=True on each group alone."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import scgf
from tests.conftest import DATA, needs_data, needs_dicts
from tests.tl.test_embed import assert_matches, interrupt_after_saves

pytestmark = [needs_dicts, needs_data]


@pytest.fixture
def cells(vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:80].copy()
    scgf.pp.tokenize(adata, model=vocab_v2)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.loc[adata.obs_names[:7], "cell_type"] = np.nan  # in no group
    return adata


def test_groups_equal_embedding_each_group_alone(tiny_v2, cells):
    scgf.tl.embed(cells, model=tiny_v2, groupby="cell_type", batch_tokens=3000)
    whole = scgf.tl.embed(cells, model=tiny_v2, genes=True, copy=True)
    assert_matches(cells.varm["X_geneformer"], whole.varm["X_geneformer"])
    assert_matches(cells.obsm["X_geneformer"], whole.obsm["X_geneformer"])
    table = cells.uns["X_geneformer"]["groups"]
    counts = cells.obs["cell_type"].value_counts()
    assert cells.uns["X_geneformer"]["params"]["groupby"] == "cell_type"
    assert sorted(table["group"]) == sorted(counts.index) and len(table) >= 4
    assert table["n_cells"].sum() == 80 - 7
    for group, varm_key, n in table[["group", "varm_key", "n_cells"]].itertuples(index=False):
        assert varm_key == "X_geneformer_" + group.replace("/", "_") and n == counts[group]
    differ = 0
    for group, varm_key in table.nlargest(4, "n_cells")[["group", "varm_key"]].to_numpy():
        alone = cells[cells.obs["cell_type"] == group].copy()
        scgf.tl.embed(alone, model=tiny_v2, genes=True)
        assert_matches(cells.varm[varm_key], alone.varm["X_geneformer"])
        both = ~np.isnan(cells.varm[varm_key][:, 0])
        differ += np.abs(cells.varm[varm_key][both] - whole.varm["X_geneformer"][both]).max() > 1e-3
    assert differ >= 3  # groups do differ from the all-cell mean (a shifted group would show)


def test_groups_resume_from_a_backed_file(tiny_v2, cells, tmp_path, monkeypatch):
    expected = scgf.tl.embed(cells, model=tiny_v2, groupby="cell_type", copy=True)
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    monkeypatch.setattr(scgf.settings, "checkpoint_interval", 3600)
    interrupt_after_saves(monkeypatch, 1)
    backed = ad.read_h5ad(path, backed="r+")
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.embed(backed, model=tiny_v2, groupby="cell_type", chunk_size=50)
    with pytest.raises(ValueError, match="groups"):  # other groups: refused, not mixed
        scgf.tl.embed(backed, model=tiny_v2, groupby="louvain", chunk_size=50)
    scgf.tl.embed(backed, model=tiny_v2, groupby="cell_type", chunk_size=50)
    backed.file.close()
    result = ad.read_h5ad(path)
    for key in expected.varm:
        assert_matches(result.varm[key], expected.varm[key])
    tables = [x.uns["X_geneformer"]["groups"].set_index("group") for x in (result, expected)]
    assert tables[0].sort_index().equals(tables[1].sort_index())


def test_bad_groupby_leaves_adata_unchanged(tiny_v2, cells, monkeypatch):
    from scgf.tl import _embedding_store

    monkeypatch.setattr(_embedding_store, "MAX_GROUPS", 50)
    with pytest.raises(KeyError, match="groupby='celltype' is not an obs column"):
        scgf.tl.embed(cells, model=tiny_v2, groupby="celltype")
    cells.obs["depth"] = np.arange(cells.n_obs)
    with pytest.raises(ValueError, match="has 80 distinct values; per-group gene embeddings"):
        scgf.tl.embed(cells, model=tiny_v2, groupby="depth")
    cells.obs["empty"] = np.nan
    with pytest.raises(ValueError, match="has no values"):
        scgf.tl.embed(cells, model=tiny_v2, groupby="empty")
    assert "X_geneformer" not in cells.obsm and not len(cells.varm)
