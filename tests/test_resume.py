"""``scgf._resume.check_same``: which saved progress a run may resume from."""

from __future__ import annotations

import pytest

from scgf._resume import ResumeMismatchError, as_text, check_same

SAVED = {"cells": "40:abc", "model": "tiny", "learning_rate": 0.001}


def test_the_same_run_resumes_and_a_changed_part_is_named():
    check_same(as_text(SAVED), dict(SAVED), where="here", remedy="start over")
    with pytest.raises(ResumeMismatchError, match=r"learning_rate \(saved 0.001, now 0.01\)"):
        check_same(as_text(SAVED), {**SAVED, "learning_rate": 0.01}, "here", "start over")


def test_an_option_added_later_at_its_default_keeps_older_progress():
    # progress saved before an option existed resumes when the option is left at None ...
    check_same(as_text(SAVED), {**SAVED, "attention_dropout": None}, "here", "start over")
    # ... but not when the option is set: that run is a different one
    with pytest.raises(ResumeMismatchError, match=r"attention_dropout \(saved None, now 0.0\)"):
        check_same(as_text(SAVED), {**SAVED, "attention_dropout": 0.0}, "here", "start over")
