"""``docs/errors.md`` lists the errors a user can meet; these checks keep it in step with the
source without pinning every word: scgf's error classes and the exception classes it raises are
named on the page, and a few key phrases of each section's messages occur both in the source
(as string literals, docstrings left out) and on the page."""

from __future__ import annotations

import ast
import builtins
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "scgf"
PAGE = (ROOT / "docs" / "errors.md").read_text()
PAGE_TEXT = " ".join(PAGE.split())  # messages wrap across lines in the page's prose

# Raised for conditions a user cannot cause (broken invariants, abstract methods), or turned
# by argparse into its own usage error (which the page shows as such).
INTERNAL = {"AssertionError", "NotImplementedError", "ArgumentTypeError"}
# Exceptions of other packages the page names.
FOREIGN = {"OutOfMemoryError", "SafetensorError", "UnpicklingError"}

# Key phrases of the messages, by section of the page (its "## " headings). Each must occur in
# a string literal of src/scgf and on the page: rewording one of these messages in the source
# without updating the page fails here.
FRAGMENTS = {
    "How errors reach you": [": error: "],
    "Input data": [
        "Geneformer ranks raw counts: pass layer= naming a layer of raw counts",
        "so it is not raw counts (scaled or batch-corrected data?)",
        "Geneformer needs raw counts: remove or fix those entries first.",
        "or pass n_counts_key=None to use the row sums of the count matrix.",
        "Geneformer needs human Ensembl gene IDs or symbols; pass gene_key= naming the var",
        "but a gene of another species is not its human namesake.",
        "map the genes to their human orthologs first",
        " cells have no counts on vocabulary genes; they keep their row with an empty token",
        "adata.X is empty; pass layer= naming the layer with raw counts.",
    ],
    "Tokens of another vocabulary": [
        "Tokenize again with this model: scgf.pp.tokenize(adata, model=...), using another "
        "key_added to keep both.",
    ],
    "Models": [
        "is neither a known Geneformer checkpoint nor an existing folder.",
        "it is not a checkpoint folder.",
        "nor a config.json to identify its vocabulary.",
        "Its weight file may be corrupt or incomplete",
        "needs a CUDA GPU (bitsandbytes)",
        "needs the optional package ",
        ". Install it with: ",
    ],
    "Downloads": [
        "and no verified copy is cached in",
        "To get a good copy, on a machine with internet access run",
        "does not match its pinned sha256",
        "an interrupted download or a modified file",
    ],
    "Devices and precision": [
        "is not a device; use 'cpu', 'cuda', 'cuda:1' or 'mps'",
        "Use device='cpu', or install a CUDA build of torch on a machine with a GPU.",
        "CUDA out of memory; token budget halved to",
    ],
    "Resuming": [
        "It is not used, so results are never mixed: ",
        "pass restart=True (scgf embed --restart) to discard it.",
        "pass another resume= folder (scgf perturb --resume) or delete this one.",
        "to start again, or give another output path.",
        "holds saved parts without a fingerprint",
        ": run the same command again to resume",
        ": run the same command again to continue",
        ": interrupted",
    ],
    "Perturbation arguments": [
        "No cell could be perturbed: no selected cell expresses the requested gene(s)",
        "combos=True perturbs an anchor with every other gene: pass anchor_gene=.",
        " vocabulary; use human gene symbols or Ensembl IDs.",
    ],
    "Results: getters and plots": [
        "run scgf.pp.tokenize(adata, model=...) first",
        "run scgf.tl.perturb(adata, ...) first.",
        "; run scgf.tl.embed(adata, key_added=",
    ],
    "Settings": ["; use 0–4 or one of "],
    "Command-line options": [
        " must be at least 1",
        " is not a whole number",
        " is not an .h5ad (HDF5) file. Convert other formats with anndata or scanpy first",
        " is a directory; give the path of an .h5ad file.",
    ],
}
# Sections whose claims a dedicated test checks instead of message phrases.
CHECKED_ELSEWHERE = {
    "Errors that still show a traceback": "test_traceback_section_matches_the_command_line",
}


@cache
def modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(SRC.rglob("*.py"))}


@cache
def source_literals() -> tuple[str, ...]:
    """Every string literal of ``src/scgf`` (f-string pieces included), docstrings left out."""
    texts = []
    for tree in modules().values():
        docstrings = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                docstrings.add(id(body[0].value))
        texts += [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ]
    return tuple(texts)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


@cache
def defined_errors() -> dict[str, str]:
    """scgf's own exception classes: name -> name of its first base."""
    classes = {}
    for tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.bases:
                base = _name(node.bases[0]) or ""
                if base.endswith(("Error", "Exception")):
                    classes[node.name] = base
    return classes


@cache
def raised_classes() -> dict[str, list[str]]:
    """Exception classes raised in ``src/scgf``, with where; ``raise factory(...)`` counts the
    classes that the function ``factory`` returns."""
    factories: dict[str, set[str]] = {}
    for tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                returned = {
                    _name(ret.value.func)
                    for ret in ast.walk(node)
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Call)
                }
                factories[node.name] = {n for n in returned if n and n[0].isupper()}
    found: dict[str, list[str]] = {}
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = _name(exc)
            if name is None or not name[0].isupper():
                # A factory function, or re-raising a caught exception held in a variable.
                names = factories.get(name, set()) if isinstance(node.exc, ast.Call) else set()
            else:
                names = {name}
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            for raised in names:
                found.setdefault(raised, []).append(where)
    return found


def page_sections() -> list[str]:
    return re.findall(r"^## (.+)$", PAGE, flags=re.M)


def test_the_source_is_read():
    # Guards the checks below against passing on an empty or misread source tree.
    assert {"InputDataError", "UnknownModelError", "DownloadError"} <= set(defined_errors())
    assert {"ValueError", "KeyError", "InputDataError", "UnknownModelError"} <= set(
        raised_classes()
    )
    assert len(source_literals()) > 200


@pytest.mark.parametrize("name", sorted(defined_errors()))
def test_every_scgf_error_class_is_documented_with_its_base(name):
    base = defined_errors()[name]
    assert f"| `{name}` | `{base}` |" in PAGE, (
        f"docs/errors.md has no row `{name}` (derives from `{base}`) in its table of scgf's "
        "exception classes"
    )


@pytest.mark.parametrize("name", sorted(set(raised_classes()) - INTERNAL))
def test_every_raised_exception_class_is_named(name):
    assert f"`{name}`" in PAGE, (
        f"src/scgf raises {name} ({', '.join(raised_classes()[name][:3])}) but docs/errors.md "
        "never names it: document when it happens and what to do"
    )


def test_exception_classes_on_the_page_exist():
    named = set(re.findall(r"\b([A-Z]\w*(?:Error|Warning))\b", PAGE))
    unknown = {n for n in named if n not in defined_errors() and not hasattr(builtins, n)} - FOREIGN
    assert not unknown, f"docs/errors.md names exception classes that do not exist: {unknown}"


def test_every_section_has_key_phrases():
    sections = set(page_sections())
    covered = set(FRAGMENTS) | set(CHECKED_ELSEWHERE)
    assert sections == covered, (
        f"sections without key phrases: {sorted(sections - covered)}; "
        f"key phrases of sections the page no longer has: {sorted(covered - sections)}"
    )


@pytest.mark.parametrize(
    ("section", "fragment"),
    [(section, fragment) for section, fragments in FRAGMENTS.items() for fragment in fragments],
)
def test_key_phrases_are_in_the_source_and_on_the_page(section, fragment):
    assert any(fragment in text for text in source_literals()), (
        f"{fragment!r} is no longer in any message of src/scgf: the message was reworded or "
        f"removed; update section {section!r} of docs/errors.md (and this test's phrase)"
    )
    assert fragment.strip() in PAGE_TEXT, (
        f"section {section!r} of docs/errors.md does not show {fragment!r}"
    )


def test_command_line_statuses_and_user_errors():
    from scgf.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS

    for status in (0, EXIT_USER_ERROR, EXIT_INTERRUPTED, 1):
        assert f"| `{status}` |" in PAGE
    for cls in USER_ERRORS:
        assert f"`{cls.__name__}`" in PAGE


def test_traceback_section_matches_the_command_line(monkeypatch, capsys):
    """The errors the page once listed as tracebacks are one-line user errors now."""
    import torch

    from scgf import cli

    section = PAGE.split("## Errors that still show a traceback")[1]
    assert "is a bug in scgf" in section

    def out_of_memory(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli._embed, "run", out_of_memory)  # add_parser looks it up
    assert cli.main(["embed", "a.h5ad", "b.h5ad"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "ran out of memory even for a batch of one cell" in err and "Traceback" not in err
