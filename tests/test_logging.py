"""Logging as scanpy does it: a verbosity setting, timed info lines on stderr, no root logger."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

import scgf
from scgf import _logging


def test_info_lines_reach_stderr_at_default_verbosity(capsys):
    scgf.settings.verbosity = "info"
    start = _logging.info("computing something")
    _logging.info("    finished", time=start - timedelta(seconds=12))
    err = capsys.readouterr().err.splitlines()
    assert err == ["computing something", "    finished (0:00:12)"]
    assert isinstance(start, datetime)


def test_verbosity_filters_and_accepts_scanpy_numbers(capsys):
    scgf.settings.verbosity = 1
    assert scgf.settings.verbosity == "warning"
    _logging.info("hidden")
    _logging.warning("shown")
    assert capsys.readouterr().err == "shown\n"
    scgf.settings.verbosity = "debug"
    _logging.hint("a hint")
    _logging.debug("a detail")
    assert capsys.readouterr().err == "a hint\na detail\n"
    with pytest.raises(ValueError, match="verbosity=7"):
        scgf.settings.verbosity = 7
    with pytest.raises(ValueError, match="verbosity='loud'"):
        scgf.settings.verbosity = "loud"


def test_nothing_goes_to_the_root_logger(capsys):
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    root = logging.getLogger()
    handler = Collect()
    root.addHandler(handler)
    try:
        scgf.settings.verbosity = "info"
        _logging.info("only ours")
    finally:
        root.removeHandler(handler)
    assert records == [] and capsys.readouterr().err == "only ours\n"


def test_warnings_point_at_the_users_line(tmp_path):
    """A warning raised deep inside scgf is attributed to the caller's file and line."""
    import warnings

    def nested():
        _logging.warn("careful")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nested()
    assert caught[0].filename == __file__ and caught[0].message.args[0] == "careful"


def test_empty_cells_and_empty_data_warn_at_the_caller(vocab_v2):
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    genes = list(vocab_v2.gene_ids[:50])
    counts = sp.csr_matrix(np.vstack([np.ones(50), np.zeros(50)]).astype(np.float32))
    adata = ad.AnnData(counts, var={"g": genes})
    adata.var_names = genes
    with pytest.warns(UserWarning, match="1 of 2 cells have no counts") as record:
        scgf.pp.tokenize(adata, model=vocab_v2)
    assert record[0].filename == __file__
    with pytest.warns(UserWarning, match="no cells"):
        scgf.pp.tokenize(adata[:0].copy(), model=vocab_v2)
