"""Every user error of the command line is one line and exit status 2, never a traceback;
outputs are whole or absent; interrupted runs say where they resume from."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scgf.cli import main
from tests.conftest import needs_data, needs_dicts

pytestmark = [needs_dicts, needs_data]


def run(argv, capsys) -> tuple[int, str]:
    code = main(["--quiet", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "is not a device"), ("cuda", "CUDA"), ("cuda:7", "CUDA")],
)
def test_bad_devices_are_one_line(device, message, model_dir, source, tmp_path, capsys):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out.h5ad"
    code, err = run(
        ["embed", str(source), str(out), "--model", str(model_dir), "--device", device], capsys
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing left behind


def test_corrupt_checkpoint_is_one_line(model_dir, source, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    code, err = run(
        ["embed", str(source), str(tmp_path / "o.h5ad"), "--model", str(broken)], capsys
    )
    assert code == 2 and "corrupt or incomplete" in err
    assert not (tmp_path / "o.h5ad").exists() and not (tmp_path / "o.h5ad.partial").exists()


@pytest.mark.parametrize("kind", ["directory", "text", "missing"])
def test_inputs_that_are_not_h5ad(kind, tmp_path, capsys):
    path = tmp_path / "input"
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("gene,cell\n")
    for command in ("tokenize", "embed", "perturb"):
        code, err = run([command, str(path), str(tmp_path / "o.h5ad")], capsys)
        assert code == 2 and f"{path}" in err, (command, err)
        assert not (tmp_path / "o.h5ad").exists()


def test_failed_runs_leave_no_output(model_dir, source, tmp_path, capsys):
    lognorm = tmp_path / "lognorm.h5ad"
    adata = ad.read_h5ad(source)
    adata.X = np.log1p(adata.X)
    adata.write_h5ad(lognorm)
    out = tmp_path / "out.h5ad"
    for argv in (
        ["tokenize", str(lognorm), str(out), "--model", str(model_dir)],
        ["embed", str(lognorm), str(out), "--model", str(model_dir)],
        ["embed", str(source), str(out), "--model", "Geneformer-V2-104N"],
    ):
        code, err = run(argv, capsys)
        assert code == 2, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lognorm.h5ad"], argv


def test_interrupted_embed_says_where_it_resumes(model_dir, source, tmp_path, capsys, monkeypatch):
    from tests.tl.test_embed import interrupt_after_saves

    out = tmp_path / "out.h5ad"
    argv = ["embed", str(source), str(out), "--model", str(model_dir), "--batch-tokens", "2000"]
    interrupt_after_saves(monkeypatch, 1)
    code, err = run([*argv, "--checkpoint-interval", "0"], capsys)
    assert code == 130 and "interrupted" in err and "out.h5ad.partial" in err and "resume" in err
    assert not out.exists() and (tmp_path / "out.h5ad.partial").exists()

    other = tmp_path / "other.h5ad"
    ad.read_h5ad(source)[::-1].copy().write_h5ad(other)
    code, err = run(["embed", str(other), *argv[2:]], capsys)
    assert code == 2 and "computed from something else: input" in err  # not mixed

    assert main(["--quiet", *argv]) == 0
    assert "resuming the interrupted run" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.h5ad", "out.h5ad"]
    whole = tmp_path / "whole.h5ad"
    assert main(["--quiet", "embed", str(source), str(whole), *argv[3:]]) == 0
    np.testing.assert_array_equal(
        ad.read_h5ad(out).obsm["X_geneformer"], ad.read_h5ad(whole).obsm["X_geneformer"]
    )


def test_interrupted_perturb_says_where_it_resumes(
    model_dir, source, tmp_path, capsys, monkeypatch
):
    from scgf.tl._perturb import _checkpoint

    original = _checkpoint.Checkpoint.save

    def interrupted(self, part):
        original(self, part)
        raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint.Checkpoint, "save", interrupted)
    argv = ["perturb", str(source), str(tmp_path / "o.h5ad"), "--model", str(model_dir)]
    code, err = run([*argv, "--max-cells", "9", "--resume", str(tmp_path / "ckpt")], capsys)
    assert code == 130 and f"saved in {tmp_path / 'ckpt'}" in err
    assert not (tmp_path / "o.h5ad").exists()


def test_restart_discards_the_progress(model_dir, source, tmp_path, capsys, monkeypatch):
    from tests.tl.test_embed import interrupt_after_saves

    out = tmp_path / "out.h5ad"
    argv = ["embed", str(source), str(out), "--model", str(model_dir), "--checkpoint-interval", "0"]
    interrupt_after_saves(monkeypatch, 1)
    assert run(argv, capsys)[0] == 130
    code, err = run([*argv, "--emb-layer", "0"], capsys)
    assert code == 2 and "emb_layer (saved -1, now 0)" in err and "--restart" in err
    assert run([*argv, "--emb-layer", "0", "--restart"], capsys)[0] == 0
    assert ad.read_h5ad(out).uns["X_geneformer"]["params"]["emb_layer"] == 0
