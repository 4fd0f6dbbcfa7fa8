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
        "; pass gene_key= naming the var",
        "but a gene of another species is not its human namesake.",
        "map the genes to their human orthologs first",
        " cells have no counts on vocabulary genes; they keep their row with an empty token",
        "adata.X is empty; pass layer= naming the layer with raw counts.",
    ],
    "Tokens of another vocabulary": [
        "Tokenize again with this model: scgf.pp.tokenize(adata, model=...), using another "
        "key_added to keep both.",
    ],
    "Building vocabularies": [
        "A vocabulary is built on Ensembl gene IDs: pass gene_key= naming the var column that ",
        "The corpus is empty: pass one or more .h5ad paths or AnnData objects of raw counts.",
        ": there is nothing to compute medians from.",
        "Lower min_cells, or add cells to the corpus.",
        "Choose another folder, or pass overwrite=True (--overwrite) to replace it.",
        "the file was changed after it was saved. Save the vocabulary again.",
        "the dictionaries do not belong to this model.",
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
        "pass restart=True (scgf predict --restart) to discard it.",
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
    "Fine-tuning": [
        "a classifier needs at least 2 classes.",
        "has classes with too few cells to split: ",
        "(NaN); they are left out of training and evaluation for this task.",
        "a split column may hold only 'train', 'validation', 'test'",
        "too few to hold out whole groups in ",
        "summing to 1, e.g. (0.8, 0.1, 0.1).",
        "Pass resume=True to continue the training saved there, overwrite=True to replace it",
        "overwrite=True only replaces a previous fine-tuning run.",
        "is finished (its model is saved there)",
        "(QLoRA) needs a CUDA GPU (bitsandbytes)",
        "which are not TrainingArguments fields.",
        "there is no validation split; give split_sizes",
        "the model folder's scgf metadata is damaged.",
        "run the same command with --resume to continue",
    ],
    "Prediction and classifier results": [
        "a pretrained encoder (masked_lm) without a classification head: use scgf.tl.embed",
        "one class per gene token, not per cell): use scgf.tl.predict_genes",
        "a bare encoder (BertModel) without a classification head",
        "since the classes' meaning is not recorded in the checkpoint",
        "their prediction and probabilities are NaN.",
        "run scgf.tl.finetune(adata, ...) first",
        "run scgf.tl.predict(adata, model=..., key_added=",
        "; pass task= naming one.",
        "ROC curves are drawn for two-class tasks; task ",
        "pred_key= compares predictions with true labels: pass label_key= too.",
    ],
    "Gene classification": [
        " or var_key= naming a var column of classes (one of them).",
        "; a gene classifier needs at least two classes of genes.",
        " Use human gene symbols or Ensembl IDs of the model's vocabulary.",
        " are labelled with two or more classes: ",
        " genes). Label more genes, or lower n_folds.",
        " are expressed in no cell and are left out (",
        "): there is nothing to train on. Check that the labels and the data are the same ",
        " to continue the run saved there, overwrite=True to replace it, or another output_dir.",
        "fine-tune with the same data, model and parameters to resume, or pass ",
        " applies to two classes; this task has ",
        ", not a gene classifier (BertForTokenClassification); train one with ",
        "adata has no gene predictions under ",
        " must hold a JSON object of gene lists: ",
    ],
    "Multi-task models, LoRA and adapter folders": [
        "A multi-task classifier needs at least one task; got none.",
        "Every task needs at least 2 classes; these have fewer: ",
        " are empty or clash once '.' becomes '_'; rename them.",
        "give one finite, non-negative weight per task",
        "does not hold a BERT encoder this model can start from: ",
        "LoRA fine-tunes a BertForSequenceClassification (cell_classification), ",
        "Use quantize=None (plain LoRA works on any device), or run on a CUDA ",
        "save_adapter needs a peft.PeftModel (from apply_lora); got ",
        " does not name its base model (no 'base_model' in scgf.json, no ",
        ", the base model of the adapter folder ",
        " as its base model; merge that one first or name its base model.",
        " head are unknown; save it with scgf._train.save_adapter (it writes the fine-tuned ",
        ": its adapter is merged into full-precision weights. Drop quantize=.",
        " may belong to another base model, or its files may be damaged: save the adapter again.",
    ],
    "Pretraining": [
        "Pass resume=True to continue the run saved there, overwrite=True to replace it, or ",
        "to pretrain from scratch, or model= to continue pretraining a checkpoint, not both or ",
        "Continual pretraining keeps the model's vocabulary: ",
        "continual pretraining starts from a pretrained (BertForMaskedLM) checkpoint",
        "The corpus is an empty list: pass AnnData objects or files.",
        "nothing to pretrain on. Check that the files hold cells and that their genes are in ",
        "(Genecorpus-30M holds V1 gc30M tokens). Use a model of that vocabulary, or tokenize ",
        "vocabulary writes them; these look like V1 tokens.",
        "but no 'input_ids': a pretraining dataset holds each cell's token ids in 'input_ids'",
    ],
    "Attention and per-group gene embeddings": [
        "is the embedding layer's output, which has no attention.",
        " attention heads per layer, numbered 0 to ",
        "; use 'mean', 'all', a head number or a list.",
        " must be a whole number of at least 1.",
        "scgf.tl.attention needs an AnnData in memory (it writes layers and varp); ",
        " is not an obs column; the columns are ",
        " distinct values; per-group gene embeddings ",
        " has no values (all missing): no group to embed.",
        "which would share a varm key; rename them first.",
        " gene-pair attention; run ",
        " is not in adata.var_names (",
        " has no gene pairs in varp[",
        " occurs more than once in adata.var_names.",
    ],
    "Evaluating embeddings": [
        "scoring an embedding needs at least two labels. Pass label_key= naming a column",
        "or name another key in reps=.",
        "an embedding needs one row per cell (cells × dimensions), in adata's cell order.",
        "has a single batch: batch-correction metrics skipped, probe splits not grouped by batch",
        "Embeddings whose rows do not belong to these cells",
        "the rows were reordered or replaced",
        "no more than a random reordering of the cells does",
        "No embedding left to score: every one failed the provenance check",
    ],
    "Results: getters and plots": [
        "run scgf.pp.tokenize(adata, model=...) first",
        "run scgf.tl.perturb(adata, ...) first.",
        "run scgf.tl.evaluate(adata, label_key=...) first.",
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
