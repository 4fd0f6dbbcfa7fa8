"""The scgf.json metadata file of a fine-tuned model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

import scgf
from scgf._train._saved import METADATA_FILE, read_metadata, write_metadata


def test_round_trip(tmp_path):
    assert read_metadata(tmp_path) is None
    meta = {
        "task": "cell_classification",
        "tasks": {"cell_type": ["B", "T"]},
        "base_model": "Geneformer-V2-104M",
        "metrics": {
            "test": {"accuracy": np.float64(0.5), "macro_f1": float("nan"), "n": np.int64(4)}
        },
        "lora": None,
    }
    write_metadata(tmp_path / "model", meta)
    saved = read_metadata(tmp_path / "model")
    assert saved["tasks"] == {"cell_type": ["B", "T"]}
    assert saved["metrics"]["test"] == {"accuracy": 0.5, "macro_f1": None, "n": 4}
    assert saved["scgf_version"] == scgf.__version__
    assert saved["created"].startswith("20")
    assert json.loads((tmp_path / "model" / METADATA_FILE).read_text()) == saved
    assert not list((tmp_path / "model").glob("*.tmp"))


def test_bad_task_and_damaged_file(tmp_path):
    with pytest.raises(ValueError, match="task='regression'"):
        write_metadata(tmp_path, {"task": "regression"})
    (tmp_path / METADATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_metadata(tmp_path)
