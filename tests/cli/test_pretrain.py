"""``scgf pretrain``: a continual run on a file, resuming, errors, and two processes under
torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess

import pytest
from transformers import BertForMaskedLM

from scgf.cli import main
from tests._tiny import torch_threads
from tests.cli.conftest import TORCHRUN_2
from tests.conftest import needs_data, needs_dicts, sha256

pytestmark = [needs_dicts, needs_data]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread (more threads spin on a busy machine)."""
    with torch_threads(1):
        yield


QUICK = ["--max-steps", "2", "--batch-size", "4", "--eval-fraction", "0", "--device", "cpu"]


def test_pretrain_a_file_resume_and_refuse_a_used_folder(model_dir, source, tmp_path, capsys):
    out = tmp_path / "continued"
    digest = sha256(source)
    args = ["--quiet", "pretrain", str(source), "--output-dir", str(out), "--model", str(model_dir)]
    assert main([*args, *QUICK, "--save-steps", "1", "--attention-dropout", "0"]) == 0
    assert "model written to" in capsys.readouterr().out
    assert sha256(source) == digest
    loaded, info = BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.attention_probs_dropout_prob == 0.0  # the model's own is not 0
    assert main([*args, *QUICK]) == 2
    assert "is in use" in capsys.readouterr().err
    # resuming the finished run trains nothing more; other parameters are refused
    again = [*args, *QUICK, "--save-steps", "1", "--attention-dropout", "0", "--resume"]
    assert main(again) == 0
    assert main([*again, "--seed", "1"]) == 2
    assert "seed (saved 42, now 1)" in capsys.readouterr().err


def test_pretrain_needs_a_start(source, tmp_path, capsys):
    try:
        main(["pretrain", str(source), "--output-dir", str(tmp_path / "x")])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "--architecture" in capsys.readouterr().err


def test_torchrun_two_processes(model_dir, source, tmp_path):
    out = tmp_path / "dist"
    command = [
        *TORCHRUN_2,
        "--quiet",
        "pretrain",
        str(source),
        "--output-dir",
        str(out),
        "--model",
        str(model_dir),
        *QUICK,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model written to") == 1  # process 0 reports
    model = BertForMaskedLM.from_pretrained(out)
    assert model.config.architectures == ["BertForMaskedLM"]
    state = (out / "checkpoint-2" / "trainer_state.json").read_text()
    assert '"global_step": 2' in state
