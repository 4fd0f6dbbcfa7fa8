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
