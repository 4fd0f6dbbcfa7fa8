"""scgf.tl.perturb equals a direct implementation of the reference's perturbation (spec §5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import scgf
from tests._reference_perturber import Reference, copies_all, scores, state_means
from tests.conftest import DATA, needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]
TOL = {"rtol": 0, "atol": 1e-6}


def test_precision_is_float32_unless_asked():
    from scgf.tl._perturb import perturbation_dtype

    assert perturbation_dtype(None, torch.device("cuda")) == torch.float32
    assert perturbation_dtype(None, torch.device("cpu")) == torch.float32
    assert perturbation_dtype("bf16", torch.device("cuda")) == torch.bfloat16


def small_cells(vocab, n=4, gene_key=None, shortest=True):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    scgf.pp.tokenize(adata, model=vocab, gene_key=gene_key)
    lengths = np.diff(adata.obsm["gf_tokens"].indptr)
    order = np.argsort(lengths)
    return adata[np.sort(order[:n] if shortest else order[-n:])].copy()


def assert_not_noise(values) -> None:
    """The scores vary far beyond the tolerance, so matching them means something."""
    assert np.ptp(np.asarray(list(values))) > 100 * TOL["atol"]


def per_cell_scores(adata, key="scgf_perturb"):
    layer = adata.layers[key].tocoo()
    return {
        (int(r), int(c)): float(v) for r, c, v in zip(layer.row, layer.col, layer.data, strict=True)
    }


def var_of(adata, vocab):
    tokens = vocab.map_genes(adata.var_names)
    out = {}
    for j, t in enumerate(tokens):
        if t >= 0:
            out.setdefault(int(t), j)
    return out


@pytest.mark.parametrize("perturb_type", ["delete", "overexpress", "inhibit", "activate"])
def test_all_genes_v2_cls_matches_reference(tiny_v2, vocab_v2, perturb_type):
    adata = small_cells(vocab_v2)
    scgf.tl.perturb(adata, "all", perturb_type=perturb_type, model=tiny_v2, batch_tokens=700)
    ref = Reference(tiny_v2, special=True)
    got = per_cell_scores(adata)
    column = var_of(adata, vocab_v2)
    n = 0
    for cell, seq in enumerate(scgf.get.tokens(adata)):
        copies = copies_all(ref, list(map(int, seq)), perturb_type)
        expected, _ = scores(ref, seq, copies, "cls")
        for (tok, _), value in zip(copies, expected[:, 0], strict=True):
            assert got[(cell, column[tok])] == pytest.approx(value, rel=0, abs=1e-6)
            n += 1
    assert n == len(got) > 50
    assert_not_noise(got.values())
    table = scgf.get.perturb_df(adata)
    assert set(table["state"]) == {"original"} and table["n_cells"].sum() == n


def test_states_gene_shifts_and_statistics(tiny_v2, vocab_v2):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    scgf.pp.tokenize(adata, model=vocab_v2)
    states = {"key": "cell_type", "start": "CD34+", "goal": "CD14+ Monocyte", "alt": ["CD19+ B"]}
    scgf.tl.perturb(adata, "all", model=tiny_v2, cell_states=states, max_cells=2, gene_shifts=True)
    ref = Reference(tiny_v2, special=True)
    seqs = [list(map(int, s)) for s in scgf.get.tokens(adata)]
    labels = adata.obs["cell_type"].to_numpy()
    embs = [
        state_means(ref, [s for s, lab in zip(seqs, labels, strict=True) if lab == state], "cls")
        for state in ["CD14+ Monocyte", "CD19+ B", "CD34+"]
    ]
    got = per_cell_scores(adata)
    column = var_of(adata, vocab_v2)
    perturbed_cells = sorted({c for c, _ in got})
    assert len(perturbed_cells) == 2 and all(labels[c] == "CD34+" for c in perturbed_cells)
    expected_shifts = {}
    for cell in perturbed_cells:
        copies = copies_all(ref, seqs[cell], "delete")
        expected, per_gene = scores(ref, seqs[cell], copies, "cls", states=embs, gene_shifts=True)
        for (tok, _), value in zip(copies, expected[:, 0], strict=True):
            assert got[(cell, column[tok])] == pytest.approx(value, rel=0, abs=1e-6)
        for pair, values in per_gene.items():
            expected_shifts.setdefault(pair, []).extend(values)
    # The long table: goal, alt and start states, with the rank-sum test and BH FDR.
    table = scgf.get.perturb_df(adata)
    assert list(dict.fromkeys(table["state"])) == ["CD14+ Monocyte", "CD19+ B", "CD34+"]
    goal = table[table["state"] == "CD14+ Monocyte"]
    assert goal["pvalue"].between(0, 1).all() and (goal["fdr"] >= goal["pvalue"] - 1e-12).all()
    # Gene shifts: every (perturbed, affected) pair's mean cosine over the cells having both.
    shifts = adata.uns["scgf_perturb"]["gene_shifts"]
    assert len(shifts) == len(expected_shifts) > 1000
    for row in shifts.itertuples():
        values = expected_shifts[(row.perturbation, row.affected)]
        assert row.n_cells == len(values)
        assert row.mean_cosine == pytest.approx(np.mean(values), rel=0, abs=1e-6)
    assert np.ptp(shifts["mean_cosine"]) > 1e-3  # the tiny model's shifts are not float noise


def test_v1_mean_pooling_matches_reference(tiny_v1, vocab_v1):
    adata = small_cells(vocab_v1, n=3, gene_key="ensembl_id")
    scgf.tl.perturb(adata, "all", model=tiny_v1, batch_tokens=300)  # several batches a cell
    ref = Reference(tiny_v1, special=False)
    got = per_cell_scores(adata)
    tokens = vocab_v1.map_genes(adata.var["ensembl_id"])
    column = {int(t): j for j, t in reversed(list(enumerate(tokens))) if t >= 0}
    n = 0
    for cell, seq in enumerate(scgf.get.tokens(adata)):
        copies = copies_all(ref, list(map(int, seq)), "delete")
        expected, _ = scores(ref, seq, copies, "mean")
        for (tok, _), value in zip(copies, expected[:, 0], strict=True):
            assert got[(cell, column[tok])] == pytest.approx(value, rel=0, abs=1e-6)
            n += 1
    assert n == len(got)
    assert_not_noise(got.values())


def test_v1_states_with_mean_pooling_match_reference(tiny_v1, vocab_v1):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")
    scgf.pp.tokenize(adata, model=vocab_v1, gene_key="ensembl_id")
    states = {"key": "cell_type", "start": "CD34+", "goal": "CD14+ Monocyte"}
    scgf.tl.perturb(adata, "all", model=tiny_v1, cell_states=states, max_cells=1)
    ref = Reference(tiny_v1, special=False)
    seqs = [list(map(int, s)) for s in scgf.get.tokens(adata)]
    labels = adata.obs["cell_type"].to_numpy()
    embs = [
        state_means(ref, [s for s, lab in zip(seqs, labels, strict=True) if lab == state], "mean")
        for state in ["CD14+ Monocyte", "CD34+"]
    ]
    got = per_cell_scores(adata)
    tokens = vocab_v1.map_genes(adata.var["ensembl_id"])
    column = {int(t): j for j, t in reversed(list(enumerate(tokens))) if t >= 0}
    (cell,) = {c for c, _ in got}
    assert labels[cell] == "CD34+"
    copies = copies_all(ref, seqs[cell], "delete")
    expected, _ = scores(ref, seqs[cell], copies, "mean", states=embs)
    assert len(copies) == len(got)
    for (tok, _), value in zip(copies, expected[:, 0], strict=True):
        assert got[(cell, column[tok])] == pytest.approx(value, rel=0, abs=1e-6)
    assert_not_noise(got.values())


def test_gene_group_overexpression_with_absent_gene(tiny_v2, vocab_v2):
    adata = small_cells(vocab_v2, n=3)
    seqs = [list(map(int, s)) for s in scgf.get.tokens(adata)]
    present = vocab_v2.id_of_token[seqs[0][5]]
    absent = next(
        g for g in ("ENSG00000105329", "ENSG00000169583") if vocab_v2.token_ids[g] not in seqs[0]
    )
    scgf.tl.perturb(adata, {"pair": [present, absent]}, perturb_type="overexpress", model=tiny_v2)
    got = adata.obsm["scgf_perturb"]["pair"].to_numpy()
    ref = Reference(tiny_v2, special=True)
    toks = (vocab_v2.token_ids[present], vocab_v2.token_ids[absent])
    for cell, seq in enumerate(seqs):
        genes = [g for g in seq[1:-1] if g not in toks]
        copy = [seq[0], *toks, *genes, seq[-1]]
        expected, _ = scores(ref, seq, [(toks, copy)], "cls")
        assert got[cell] == pytest.approx(expected[0, 0], rel=0, abs=1e-6)


def test_group_deletion_only_in_cells_expressing_all(tiny_v2, vocab_v2):
    adata = small_cells(vocab_v2, n=6, shortest=False)
    seqs = scgf.get.tokens(adata)
    common = vocab_v2.id_of_token[int(seqs[0][1])]
    scgf.tl.perturb(adata, [common], model=tiny_v2)
    values = adata.obsm["scgf_perturb"].iloc[:, 0].to_numpy()
    expresses = [vocab_v2.token_ids[common] in s for s in seqs]
    assert list(~np.isnan(values)) == expresses


def test_resume_equals_uninterrupted(tiny_v2, vocab_v2, tmp_path, monkeypatch):
    adata = small_cells(vocab_v2, n=12)
    full = scgf.tl.perturb(adata, "all", model=tiny_v2, copy=True)
    from scgf.tl._perturb import _cells, _checkpoint

    original = _checkpoint.Checkpoint.save
    saved = []

    def interrupted(self, part):
        original(self, part)
        saved.append(len(part["done"]))
        if len(saved) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint.Checkpoint, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scgf.tl.perturb(adata, "all", model=tiny_v2, resume=tmp_path / "ckpt")
    monkeypatch.setattr(_checkpoint.Checkpoint, "save", original)
    ran = []
    real_run = _cells.CellPerturber.run_cells

    def counting_run(self, tokens, cells, **kw):
        ran.extend(cells)
        return real_run(self, tokens, cells, **kw)

    monkeypatch.setattr(_cells.CellPerturber, "run_cells", counting_run)
    scgf.tl.perturb(adata, "all", model=tiny_v2, resume=tmp_path / "ckpt")
    assert len(ran) == 12 - saved[0]
    np.testing.assert_allclose(
        adata.layers["scgf_perturb"].toarray(), full.layers["scgf_perturb"].toarray(), **TOL
    )
    a, b = scgf.get.perturb_df(adata), scgf.get.perturb_df(full)
    np.testing.assert_allclose(a["mean_shift"], b["mean_shift"], **TOL)
    with pytest.raises(ValueError, match=r"emb_layer \(saved -1, now 0\)"):
        scgf.tl.perturb(adata, "all", model=tiny_v2, emb_layer=0, resume=tmp_path / "ckpt")


def test_checkpoint_of_other_cells_is_refused(tiny_v2, vocab_v2, tmp_path):
    """The same cells in reverse order, or other cells, never resume from a checkpoint (it
    used to give wrong rows silently)."""
    adata = small_cells(vocab_v2, n=6)
    scgf.tl.perturb(adata, "all", model=tiny_v2, resume=tmp_path / "ckpt", max_cells=2)
    with pytest.raises(ValueError, match=r"computed from something else: cells"):
        scgf.tl.perturb(
            adata[::-1].copy(), "all", model=tiny_v2, resume=tmp_path / "ckpt", max_cells=2
        )
    other = adata.copy()
    other.obsm["gf_tokens"] = other.obsm["gf_tokens"][::-1]  # same names, other tokens
    with pytest.raises(ValueError, match=r"something else: tokens"):
        scgf.tl.perturb(other, "all", model=tiny_v2, resume=tmp_path / "ckpt", max_cells=2)
    scgf.tl.perturb(adata, "all", model=tiny_v2, resume=tmp_path / "ckpt", max_cells=2)


def test_api_and_cli_record_the_same_states(tiny_v2, vocab_v2):
    adata = small_cells(vocab_v2, n=40, shortest=False)
    states = {"key": "cell_type", "start": "CD19+ B", "goal": "Dendritic"}
    scgf.tl.perturb(adata, ["CD74"], model=tiny_v2, cell_states=states, key_added="api")
    scgf.tl.perturb(
        adata, ["CD74"], model=tiny_v2, cell_states={**states, "alt": []}, key_added="cli"
    )
    assert adata.uns["api"]["params"]["cell_states"] == adata.uns["cli"]["params"]["cell_states"]


def test_checkpoint_blocks_close_at_eight_cells_or_2048_tokens():
    from scgf.tl._perturb import checkpoint_blocks

    lengths = np.array([100] * 10 + [3000, 900, 900, 900, 5])
    blocks = checkpoint_blocks(list(range(15)), lengths)
    assert blocks == [list(range(8)), [8, 9, 10], [11, 12, 13], [14]]
    assert checkpoint_blocks([], lengths) == []


def test_bad_requests(tiny_v2, vocab_v2):
    adata = small_cells(vocab_v2, n=3)
    with pytest.raises(ValueError, match="perturb_type"):
        scgf.tl.perturb(adata, "all", perturb_type="knockout", model=tiny_v2)
    with pytest.raises(ValueError, match="None of"):
        scgf.tl.perturb(adata, ["NOT_A_GENE"], model=tiny_v2)
    with pytest.raises(ValueError, match="pass anchor_gene"):
        scgf.tl.perturb(adata, "all", combos=True, model=tiny_v2)
    with pytest.raises(ValueError, match="No cells with obs"):
        scgf.tl.perturb(
            adata, "all", model=tiny_v2, cell_states={"key": "cell_type", "start": "x", "goal": "y"}
        )
    assert "scgf_perturb" not in adata.uns


def test_anchor_combos(tiny_v2, vocab_v2):
    adata = small_cells(vocab_v2, n=4)
    seqs = [list(map(int, s)) for s in scgf.get.tokens(adata)]
    anchor = seqs[0][2]
    scgf.tl.perturb(
        adata, "all", anchor_gene=vocab_v2.id_of_token[anchor], combos=True, model=tiny_v2
    )
    ref = Reference(tiny_v2, special=True)
    got = per_cell_scores(adata)
    column = var_of(adata, vocab_v2)
    for cell, seq in enumerate(seqs):
        if anchor not in seq:
            assert not any(c == cell for c, _ in got)
            continue
        genes = seq[1:-1]
        copies = [
            (tok, [seq[0], *[g for g in genes if g not in (anchor, tok)], seq[-1]])
            for tok in genes
            if tok != anchor
        ]
        expected, _ = scores(ref, seq, [((anchor, t), c) for t, c in copies], "cls")
        for (tok, _), value in zip(copies, expected[:, 0], strict=True):
            assert got[(cell, column[tok])] == pytest.approx(value, rel=0, abs=1e-6)
    assert_not_noise(got.values())


MEMORY_SCRIPT = """
import resource, sys
import anndata as ad, numpy as np, torch
from transformers import BertForMaskedLM
import scgf
from tests._tiny import tiny_config

folder, n_genes = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
BertForMaskedLM(tiny_config("V1", hidden=128, layers=1)).save_pretrained(folder)
vocab = scgf.models.get_vocabulary("V1")
genes = [g for g in vocab.token_ids if g.startswith("ENSG")][:n_genes]
adata = ad.AnnData(np.arange(1, n_genes + 1, dtype=np.float32)[None] * 10)
adata.var_names = genes
scgf.settings.progress = False
scgf.pp.tokenize(adata, model=vocab)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scgf.tl.perturb(adata, "all", model=folder, pooling="mean")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, adata.layers["scgf_perturb"].nnz)
"""


def test_memory_does_not_grow_with_the_square_of_a_cell(tmp_path, hub_settings, vocab_v1):
    # Holding every copy's hidden states took 4.4 GB here (n_genes² × 128 floats, twice).
    # A fixed mmap threshold keeps glibc's heap fragmentation out of the peak measured.
    env = {
        **os.environ,
        "SCGF_BASE_URL": scgf.settings.base_url,
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }
    env["SCGF_CACHE_DIR"] = str(scgf.settings.cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "model"), "1200"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    growth_mb, n_scores = done.stdout.split()
    assert int(n_scores) == 1200
    assert float(growth_mb) < 200  # measured ~50 MB
