"""Recognising identifiers of other species before they are mapped as human genes."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from scgf.vocab._gene_ids import describe_identifiers, non_human_evidence, normalize_gene_ids
from tests.conftest import needs_data, real_datasets

MOUSE = ["Cd3e", "Actb", "Hes4", "Gm26917", "Rpl13a", "mt-Co1", "Hist1h2bc", "Mir1a-1", "Xist"]


def test_mouse_capitalisation_is_evidence_with_examples():
    evidence = non_human_evidence([*MOUSE, "4933401J01Rik", "H2-K1"])
    assert evidence is not None and evidence.species == "mouse or rat" and evidence.capitalisation
    assert (evidence.count, evidence.total) == (9, 11)
    assert evidence.examples[:3] == ("Cd3e", "Actb", "Hes4")
    text = evidence.describe()
    assert "9 of 11" in text and "'Cd3e'" in text and "upper-case" in text


@pytest.mark.parametrize(
    "human",
    [
        ["CD3E", "ACTB", "HES4", "MT-CO1", "C1orf112", "CXorf21", "C21orf91-OT1", "RP11-34P13.7"],
        ["abg", "snoU13", "Y_RNA", "Metazoa_SRP", "hsa-mir-1253", "LOC100505874", "7SK"],
        ["ENSG00000121410", "ENSG00000121410.12", "ENSGR0000182378", "ENST00000263100"],
    ],
)
def test_human_identifiers_are_not_evidence(human):
    assert non_human_evidence(human) is None


@pytest.mark.parametrize(
    ("ids", "species"),
    [
        ([f"ENSMUSG{i:011d}" for i in range(5)], "mouse"),
        ([f"ENSMUSG{i:011d}.3" for i in range(5)], "mouse"),
        ([f"ENSRNOG{i:011d}" for i in range(5)], "rat"),
        ([f"ENSDARG{i:011d}" for i in range(5)], "zebrafish"),
        ([f"ENSMMUG{i:011d}" for i in range(5)], "rhesus macaque"),
        ([f"ENSXYZG{i:011d}" for i in range(5)], "non-human"),
        ([f"FBgn{i:07d}" for i in range(5)], "fly"),
        ([f"WBGene{i:08d}" for i in range(5)], "worm"),
        (["YAL001C", "YBR020W", "YDL229W", "YPR201W"], "yeast"),
        (["AT1G01010", "AT5G67640", "ATCG00020"], "arabidopsis"),
    ],
)
def test_other_species_ids_name_the_species(ids, species):
    evidence = non_human_evidence([*ids, "CD3E"])
    assert evidence is not None and evidence.species == species
    assert evidence.count == len(ids) and evidence.examples[0] == ids[0]
    assert not evidence.capitalisation


def test_a_minority_is_not_evidence():
    # Half or less of the identifiers: not enough to call the data non-human.
    assert non_human_evidence(["Cd3e", "Actb", "CD3E", "ACTB"]) is None
    assert non_human_evidence([]) is None and non_human_evidence([None, ""]) is None


def test_description_names_the_species():
    keys = normalize_gene_ids([f"ENSRNOG{i:011d}" for i in range(5)])
    assert "rat Ensembl IDs" in describe_identifiers(keys)
    mouse = normalize_gene_ids([f"ENSMUSG{i:011d}" for i in range(5)])
    assert "mouse Ensembl IDs (ENSMUSG…)" in describe_identifiers(mouse)


@needs_data
@pytest.mark.parametrize("path", real_datasets(), ids=lambda p: p.stem)
def test_no_false_positive_on_real_human_data(path):
    adata = ad.read_h5ad(path, backed="r")
    columns = {"var_names": adata.var_names.to_series()}
    for name in adata.var.columns:
        if adata.var[name].dtype.kind == "O" or isinstance(
            adata.var[name].dtype, pd.CategoricalDtype
        ):
            columns[name] = adata.var[name]
    for name, values in columns.items():
        assert non_human_evidence(values.to_numpy()) is None, name
