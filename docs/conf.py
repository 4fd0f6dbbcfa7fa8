"""Sphinx configuration for the scgf documentation.

The tutorials (``tutorials/*.ipynb``, linked into ``docs/tutorials``) are committed without
outputs and executed while the docs are built, offline. No weights can be downloaded where the
docs are built, so each tutorial runs against a tiny random stand-in for the real checkpoint
(two layers, 16 wide, Geneformer V2's vocabulary size and context) carrying the real V2 gene
dictionaries, found in the shared folder beside the repository (``../shared`` or
``$SCGF_SHARED_DIR``) or in scgf's cache (``scgf fetch gc104M``). The rendered page says so in
a note and shows the cell that swaps the stand-in in. Without the dictionaries the tutorials
render without outputs, with a warning (an error under ``-W``); ``SCGF_DOCS_EXECUTE=0`` skips
the execution on purpose, e.g. for a quick local build.

``{scgf-help} SUBCOMMAND`` renders the ``--help`` text of the real ``scgf`` parser.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib.metadata import version as _version
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)

project = "scgf"
author = "the scgf developers"
copyright = "2026, the scgf developers"  # noqa: A001
release = _version("scgf")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
typehints_document_rtype = False
always_document_param_types = False
myst_enable_extensions = ["colon_fence"]
nitpicky = False
html_theme = "furo"
html_title = "scgf"
exclude_patterns = ["_build"]

# Tutorials: executed at every build, incremental ones too (see the module docstring); a
# failing cell fails the build.
EXECUTE = os.environ.get("SCGF_DOCS_EXECUTE", "1") != "0"
nb_execution_mode = "force" if EXECUTE else "off"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

STAND_IN = "tiny-random-Geneformer-V2"

NOTE = f"""\
```{{note}}
**The outputs on this page come from a tiny random stand-in, not from Geneformer.** The
documentation is built without internet access, so the real checkpoint cannot be downloaded
there. The next cell replaces `MODEL` with `{STAND_IN}`: a randomly initialised two-layer,
16-wide `BertForMaskedLM` with Geneformer V2's vocabulary size and context, carrying the real
V2 gene dictionaries. Tokenization and the data are real; every model output below
(embeddings, perturbation scores, classifiers, attention) carries no biology. The notebook in the repository (`tutorials/`) has no such cell:
run it for the real model's results.
```"""

SWAP = """\
# Added by the documentation build, not part of the notebook: no weights can be downloaded
# where these pages are built, so a tiny random stand-in replaces the real checkpoint.
MODEL = {model!r}
"""

# tqdm warns that ipywidgets is missing when scanpy imports it; it is not the reader's concern.
QUIET = """\
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")
"""


def _shared_dictionaries() -> dict[str, Path] | None:
    """The V2 dictionaries, under their published names: shared folder, else scgf's cache."""
    from scgf.models import cached_path, published_vocabularies

    shared = Path(os.environ.get("SCGF_SHARED_DIR", ROOT.parent / "shared"))
    remotes = published_vocabularies()["gc104M"].files.values()
    folder = shared / "reference" / "geneformer_dicts"
    found = {r.name: folder / r.name.replace("_gc104M", "_gc95M") for r in remotes}
    if all(path.is_file() for path in found.values()):
        return found
    found = {r.name: cached_path(r) for r in remotes}
    if all(
        path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == r.sha256
        for r, path in zip(remotes, found.values(), strict=True)
    ):
        return found
    return None


@functools.cache
def _stand_in(workdir: str) -> Path | None:
    """Build the tiny stand-in checkpoint folder once per build; ``None`` without dictionaries."""
    dictionaries = _shared_dictionaries()
    if dictionaries is None:
        return None
    sys.path.insert(0, str(ROOT))
    from tests._tiny import make_tiny_checkpoint
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    target = Path(workdir) / STAND_IN
    if not target.is_dir():  # parallel readers: build aside, then rename into place
        Path(workdir).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=workdir))
        make_tiny_checkpoint(scratch, "V2")
        for name, path in dictionaries.items():
            shutil.copyfile(path, scratch / name)
        try:
            scratch.rename(target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _cell(kind: str, cell_id: str, source: str, tags: list[str] | None = None) -> dict:
    cell = {"cell_type": kind, "id": cell_id, "metadata": {"tags": tags or []}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _render_with_stand_in(app, docname: str, source: list[str]) -> None:
    """``source-read``: swap the stand-in model into a tutorial before myst-nb executes it."""
    if not (EXECUTE and docname.startswith("tutorials/")):
        return
    notebook = json.loads(source[0])
    cells = notebook["cells"]
    index = next(
        (i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])), None
    )
    if index is None:
        logger.warning("%s has no cell tagged 'parameters' to swap the model in", docname)
        return
    model = _stand_in(str(Path(app.doctreedir) / "scgf-stand-in"))
    if model is None:
        logger.warning(
            "%s renders without outputs: the real V2 gene dictionaries were found neither in the "
            "shared folder (../shared or SCGF_SHARED_DIR) nor in scgf's cache; run `scgf fetch "
            "gc104M` once with internet access, or set SCGF_DOCS_EXECUTE=0 to skip executing",
            docname,
        )
        notebook["metadata"].setdefault("mystnb", {})["execution_mode"] = "off"
    else:
        swap = SWAP.format(model=str(model))
        cells[index + 1 : index + 1] = [_cell("code", "scgf-docs-stand-in", swap)]
        cells[index:index] = [_cell("markdown", "scgf-docs-note", NOTE)]
        cells[:0] = [_cell("code", "scgf-docs-quiet", QUIET, tags=["remove-cell"])]
    source[0] = json.dumps(notebook)


def _always_execute(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated``: re-run the tutorials at every build, even an incremental one, so
    that their outputs always come from the code being documented."""
    return [name for name in env.found_docs if name.startswith("tutorials/")] if EXECUTE else []


def _remove_stand_in(app, exception) -> None:
    shutil.rmtree(Path(app.doctreedir) / "scgf-stand-in", ignore_errors=True)
    _stand_in.cache_clear()


class CommandHelp(SphinxDirective):
    """``{scgf-help} [SUBCOMMAND]``: the ``--help`` text of ``scgf`` from its real parser."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        from scgf.cli import build_parser

        parser = build_parser()
        if self.arguments:
            commands = next(
                a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            )
            if self.arguments[0] not in commands:
                raise self.error(
                    f"scgf has no subcommand {self.arguments[0]!r} (it has {', '.join(commands)})"
                )
            parser = commands[self.arguments[0]]
        parser.formatter_class = functools.partial(argparse.HelpFormatter, width=100)
        if hasattr(parser, "color"):  # Python ≥ 3.14 colours help on terminals
            parser.color = False
        text = parser.format_help()
        return [nodes.literal_block(text, text, language="none")]


def setup(app):
    app.connect("env-get-outdated", _always_execute)
    app.connect("source-read", _render_with_stand_in)
    app.connect("build-finished", _remove_stand_in)
    app.add_directive("scgf-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
