"""``scgf fetch``: models, dictionaries, and names it does not know."""

from __future__ import annotations

import pytest

from scgf.cli import main
from tests.conftest import needs_dicts

pytestmark = needs_dicts


def test_typo_in_a_model_name_says_the_model_is_unknown(hub, hub_settings, capsys):
    n_requests = len(hub.requests)
    assert main(["--quiet", "fetch", "Geneformer-V2-14M"]) != 0
    err = capsys.readouterr().err
    assert "'Geneformer-V2-14M' is not a known Geneformer checkpoint" in err
    assert "Did you mean 'Geneformer-V2-104M'" in err
    assert "vocabulary" not in err.split("Did you mean")[0]
    assert len(hub.requests) == n_requests  # nothing was downloaded


def test_names_are_checked_before_anything_is_downloaded(hub, hub_settings, capsys):
    n_requests = len(hub.requests)
    assert main(["--quiet", "fetch", "--vocabulary-only", "Geneformer-V1-10M", "gc31M"]) != 0
    assert "Did you mean 'gc30M'" in capsys.readouterr().err
    assert len(hub.requests) == n_requests


@pytest.mark.parametrize(("name", "vocab"), [("gc30M", "gc30M"), ("V2", "gc104M")])
def test_vocabulary_names_fetch_dictionaries(hub_settings, capsys, name, vocab):
    assert main(["--quiet", "fetch", name]) == 0
    assert f"{vocab} dictionaries:" in capsys.readouterr().out
