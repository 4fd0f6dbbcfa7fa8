"""The documentation covers the command line and the tutorials (``docs/``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from scgf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = (ROOT / "docs" / "cli.md").read_text()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    ]


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_has_a_section_with_its_generated_help(name):
    assert f"## `scgf {name}`" in CLI_PAGE
    assert re.search(rf"```{{scgf-help}} {name}\n```", CLI_PAGE)


@pytest.mark.parametrize("name", ["", *sorted(subcommands())])
def test_every_option_is_explained(name):
    parser = subcommands()[name] if name else build_parser()
    prose = re.sub(r"```\{scgf-help\}.*?```", "", CLI_PAGE, flags=re.S)
    missing = [o for o in options(parser) if not re.search(rf"`{o}[ `=]", prose)]
    assert not missing, f"docs/cli.md does not explain scgf {name} {missing}"


def test_pages_are_in_the_toctree():
    toctree = (ROOT / "docs" / "index.md").read_text().split("```{toctree}")[1].split("```")[0]
    entries = set(toctree.split())
    assert "cli" in entries
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"tutorials/{notebook.stem}" in entries
        linked = ROOT / "docs" / "tutorials" / notebook.name
        assert linked.resolve() == notebook.resolve()
