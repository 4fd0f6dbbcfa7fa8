"""Checks that need a CUDA GPU (``pytest --gpu``): autocast, 8/4-bit weights, the OOM back-off
on perturbed copies with a real out-of-memory error, and torchrun with NCCL.

Run them with ``bash benchmarks/gpu_suite.sh`` on a machine with a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import torch

import scgf
from scgf._engine import LayerOutput, Runner, load_model
from tests._tiny import make_tiny_checkpoint, tiny_config
from tests.conftest import DATA, DICTS, needs_data, needs_dicts

pytestmark = [pytest.mark.gpu, needs_dicts, needs_data]
CUDA = torch.device("cuda")


def cells(vocab, n=40):
    adata = ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:n].copy()
    scgf.pp.tokenize(adata, model=vocab)
    return adata


def wide_checkpoint(folder, hidden=256, layers=4):
    """A random V2-shaped model wide enough for bitsandbytes' kernels."""
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = tiny_config("V2", hidden=hidden, layers=layers)
    config.num_attention_heads = 4
    config.initializer_range = 0.02
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


def row_cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_float32_on_cuda_matches_cpu_and_bf16_autocast_is_close(tmp_path, vocab_v2):
    folder = wide_checkpoint(tmp_path)
    adata = cells(vocab_v2)
    scgf.tl.embed(adata, model=folder, device="cpu", key_added="cpu")
    scgf.tl.embed(adata, model=folder, device="cuda", dtype="float32", key_added="fp32")
    scgf.tl.embed(adata, model=folder, device="cuda", key_added="bf16")  # the CUDA default
    assert adata.uns["bf16"]["params"]["dtype"] in ("bfloat16", "float16")
    np.testing.assert_allclose(adata.obsm["fp32"], adata.obsm["cpu"], rtol=0, atol=1e-5)
    assert row_cosines(adata.obsm["bf16"], adata.obsm["cpu"]).min() > 0.999


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_weights_load_and_stay_close(tmp_path, vocab_v2, quantize):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    folder = wide_checkpoint(tmp_path)
    loaded = load_model(folder, device=CUDA, quantize=quantize)
    kind = bnb.nn.Linear8bitLt if quantize == "8bit" else bnb.nn.Linear4bit
    assert any(isinstance(m, kind) for m in loaded.encoder.modules())
    adata = cells(vocab_v2)
    scgf.tl.embed(adata, model=folder, device="cuda", dtype="float32", key_added="full")
    scgf.tl.embed(adata, model=folder, device="cuda", quantize=quantize, key_added="q")
    assert row_cosines(adata.obsm["q"], adata.obsm["full"]).min() > 0.98


def test_real_out_of_memory_on_perturbed_copies_backs_off(tmp_path, vocab_v2):
    folder = wide_checkpoint(tmp_path, hidden=512, layers=2)
    loaded = load_model(folder, device=CUDA)
    rng = np.random.default_rng(0)
    genes = rng.choice(np.arange(4, 20_000), size=4094, replace=False)
    copies = [np.concatenate([[2], np.delete(genes, i), [3]]) for i in range(64)]
    expected = {}
    for batch in Runner(loaded, LayerOutput(loaded, cls_only=True), token_budget=8 * 4096).run(
        copies
    ):
        for i, row in enumerate(batch.rows):
            expected[int(row)] = batch.output[i].cpu()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    blocker = torch.empty(max(0, free - 3 * 2**30), dtype=torch.uint8, device=CUDA)
    try:
        runner = Runner(loaded, LayerOutput(loaded, cls_only=True), token_budget=64 * 4096)
        got = {}
        for batch in runner.run(copies):
            for i, row in enumerate(batch.rows):
                got[int(row)] = batch.output[i].cpu()
    finally:
        del blocker
        torch.cuda.empty_cache()
    assert runner.token_budget < 64 * 4096  # a real OOM happened and the budget was halved
    assert sorted(got) == list(range(64))
    for row, value in expected.items():
        torch.testing.assert_close(got[row], value, rtol=0, atol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="torchrun with NCCL needs two CUDA GPUs",
)
def test_torchrun_nccl_embed_equals_one_process(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "model", "V2", seed=3)
    for name in ("token_dictionary", "gene_median_dictionary", "ensembl_mapping_dict"):
        (folder / f"{name}_gc104M.pkl").write_bytes((DICTS / f"{name}_gc95M.pkl").read_bytes())
    source = tmp_path / "cells.h5ad"
    ad.read_h5ad(DATA / "pbmc68k_reduced_counts.h5ad")[:90].copy().write_h5ad(source)
    common = ["--quiet", "embed", str(source)]
    options = ["--model", str(folder), "--dtype", "float32"]
    single, split = tmp_path / "single.h5ad", tmp_path / "split.h5ad"
    run = [sys.executable, "-m", "scgf.cli", *common, str(single), *options]
    subprocess.run(run, check=True, env=os.environ.copy())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", "2", "-m", "scgf.cli", *common, str(split), *options]
    subprocess.run(torchrun, check=True, env=os.environ.copy())
    np.testing.assert_allclose(
        ad.read_h5ad(split).obsm["X_geneformer"],
        ad.read_h5ad(single).obsm["X_geneformer"],
        rtol=0,
        atol=1e-5,
    )
