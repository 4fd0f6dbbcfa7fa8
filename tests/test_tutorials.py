"""The tutorials run end to end against a tiny local checkpoint (offline).

The documentation build executes them too (``docs/conf.py``), so they are committed without
outputs and with the ``parameters`` cell it swaps the stand-in model after.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests._tiny import make_tiny_checkpoint
from tests.conftest import DATA, DICTS, needs_dicts

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


@needs_dicts
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("01_embeddings", ""),
        ("02_in_silico_perturbation", "MAX_CELLS = 2"),
        ("03_finetuning", f"DATA = {str(DATA / 'pbmc_sorted_zheng2017_3100.h5ad')!r}"),
        ("04_pretraining", ""),
        ("05_evaluate_and_attention", ""),
        ("06_gene_classification", "MAX_FOLDS = 2"),
    ],
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


@pytest.mark.parametrize("path", sorted(TUTORIALS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_a_model_parameter(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not [c for c in code if c.outputs or c.execution_count is not None]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].source.startswith('MODEL = "Geneformer-V2-104M"')
