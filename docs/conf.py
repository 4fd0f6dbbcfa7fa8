"""Sphinx configuration for the scgf documentation."""

from importlib.metadata import version as _version

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
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence"]
nitpicky = False
html_theme = "furo"
html_title = "scgf"
exclude_patterns = ["_build"]
