"""``import scgf`` stays cheap: torch, transformers and scanpy load only when a tool needs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scgf._optional import import_optional

HEAVY = ("torch", "transformers", "scanpy", "matplotlib", "pooch", "requests")


def loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(' '.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [m for m in HEAVY if m in out]


def test_import_scgf_loads_no_heavy_module():
    assert loaded_after("import scgf") == []


def test_cli_parser_loads_no_heavy_module():
    assert loaded_after("from scgf.cli import build_parser; build_parser()") == []


def test_a_tool_loads_torch_when_called():
    assert "torch" in loaded_after("import scgf._engine")


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r"quantize= needs .* pip install not_installed_here"):
        import_optional("not_installed_here", feature="quantize=")
    from scgf import _optional

    _optional.EXTRAS["scgf_missing_for_test"] = ("train", "Training")
    try:
        with pytest.raises(ImportError, match=r"Training needs .*scgf\[train\]"):
            import_optional("scgf_missing_for_test")
    finally:
        del _optional.EXTRAS["scgf_missing_for_test"]
    assert import_optional("json").dumps([1]) == "[1]"
