"""The tutorials run end to end against a tiny local checkpoint (offline)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests._tiny import make_tiny_checkpoint
from tests.conftest import DICTS, needs_dicts

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


@needs_dicts
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "extra"),
    [("01_embeddings", ""), ("02_in_silico_perturbation", "MAX_CELLS = 2")],
)
def test_tutorial_runs(tmp_path, name, extra):
    model = make_tiny_checkpoint(tmp_path / "model", "V2")
    for stem in (
        "token_dictionary",
        "gene_median_dictionary",
        "ensembl_mapping_dict",
        "gene_name_id_dict",
    ):
        (model / f"{stem}_gc104M.pkl").write_bytes((DICTS / f"{stem}_gc95M.pkl").read_bytes())
    notebook = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    params = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    params.source = f"MODEL = {str(model)!r}\n{extra}"
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
