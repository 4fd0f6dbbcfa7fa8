"""``scgf.vocab.gene_medians`` and ``scgf.vocab.build``: a vocabulary from your own corpus.

The shell reads a corpus (``.h5ad`` files opened backed and read-only, or AnnData objects)
file by file and chunk by chunk, checks the counts as the tokenizer does, sums the columns of
each gene as the tokenizer does, and hands ``(gene, value)`` pairs to the median kernels of
:mod:`._medians`. Memory is bounded by one chunk plus the kernel's store (every non-zero value
for ``method="exact"``; one t-digest per gene for ``method="tdigest"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _logging
from ._gene_ids import describe_identifiers, normalize_gene_ids
from ._medians import DigestMedians, ExactMedians, normalised_values
from ._vocabulary import SPECIAL_TOKENS, Vocabulary

if TYPE_CHECKING:
    import anndata as ad


# Special tokens of each layout, in token-id order (the reference's: <pad>=0, <mask>=1, and
# for V2 <cls>=2, <eos>=3); genes follow in ascending Ensembl-ID order.
LAYOUTS = {"V1": SPECIAL_TOKENS[:2], "V2": SPECIAL_TOKENS}
DEFAULT_CONTEXT = {"V1": 2048, "V2": 4096}
_ENSEMBL = re.compile(r"^ENS[A-Z]*\d{6,}$")


def gene_medians(
    corpus: str | os.PathLike | ad.AnnData | Sequence[str | os.PathLike | ad.AnnData],
    *,
    gene_key: str | None = None,
    layer: str | None = None,
    n_counts_key: str | None = "n_counts",
    gene_mapping: Vocabulary | Mapping[str, str] | str | None = None,
    method: Literal["exact", "tdigest"] = "exact",
    compression: float = 100,
    min_overlap: float = 0.1,
    chunk_size: int = 4096,
) -> pd.DataFrame:
    """Each gene's median non-zero normalised expression over a corpus.

    A cell's normalised value of a gene is ``count / n_counts * 10000`` (``n_counts`` from
    ``obs`` if present, else the cell's row sum), computed exactly as
    :func:`scgf.pp.tokenize` computes it before dividing by the median; zero counts are left
    out, as in Geneformer's median dictionaries. Genes are identified by Ensembl ID (version
    suffix dropped, upper-cased); columns with the same ID are summed, as the tokenizer sums
    them; columns without an Ensembl ID are ignored.

    Parameters
    ----------
    corpus
        One or several ``.h5ad`` paths (opened backed, read-only, and read chunk by chunk) or
        AnnData objects of raw counts (CSR, CSC, dense or backed); for a MuData, the ``rna``
        modality.
    gene_key
        ``var`` column with Ensembl IDs (e.g. ``"ensembl_id"``); ``None`` for ``var_names``.
    layer
        Layer with raw counts; ``None`` for ``X``.
    n_counts_key
        ``obs`` column with each cell's total count; when ``None`` or absent, row sums.
    gene_mapping
        Optional ``{identifier: Ensembl ID}`` map applied before the Ensembl check, to collapse
        retired IDs or to read symbols: a mapping, a :class:`Vocabulary` (its
        :attr:`~Vocabulary.gene_mapping`), or a published vocabulary or model name
        (``"V2"``). Identifiers it lacks are used as they are.
    method
        ``"exact"``: keep every non-zero value (about 12 bytes each) and take NumPy's median.
        ``"tdigest"``: one t-digest sketch per gene per file (needs ``crick``: ``pip install
        'scgf[vocab]'``), merged across files; memory bounded by the number of genes.
    compression
        The t-digest's compression (δ); 100 as the reference's.
    min_overlap
        Fewest fraction of a file's genes that must have an Ensembl ID.
    chunk_size
        Cells read at once.

    Returns
    -------
    A DataFrame indexed by Ensembl ID (ascending) with columns ``median`` (float64) and
    ``n_cells`` (cells with a non-zero count). ``attrs["params"]`` records the method,
    compression and the number of files and cells.
    """
    _check_options(method, compression, chunk_size)
    items = _corpus_items(corpus)
    mapping = _mapping_of(gene_mapping)
    store = ExactMedians() if method == "exact" else DigestMedians(compression=compression)
    index: dict[str, int] = {}  # Ensembl ID -> gene number, in order of first appearance
    n_cells = np.zeros(0, dtype=np.int64)
    total_cells = 0
    start = _logging.info(f"computing gene medians ({method}) over {len(items)} file(s)")
    for number, item in enumerate(items):
        with _opened(item, number, len(items)) as (adata, label):
            ids = _file_gene_ids(adata, gene_key, mapping, min_overlap, label)
            n_cells = _add_file(
                adata, ids, index, n_cells, store, layer, n_counts_key, chunk_size, label
            )
            total_cells += adata.n_obs
        store.finish_file()
    if total_cells == 0:
        raise ValueError(
            f"The corpus ({len(items)} file(s)) has no cells: there is nothing to compute "
            "medians from."
        )
    medians = store.medians()
    genes = np.array(list(index), dtype=object)
    table = pd.DataFrame(
        {"median": medians[: len(genes)], "n_cells": n_cells[: len(genes)]},
        index=pd.Index(genes, name="ensembl_id"),
    )
    table = table[table["n_cells"] > 0].sort_index()
    table.attrs["params"] = {
        "method": method,
        "compression": float(compression) if method == "tdigest" else None,
        "n_files": len(items),
        "n_cells": int(total_cells),
        "gene_key": gene_key,
        "layer": layer,
        "n_counts_key": n_counts_key,
    }
    _logging.info(f"    finished: {len(table)} genes, {total_cells} cells", time=start)
    return table


def build(
    corpus: str | os.PathLike | ad.AnnData | Sequence[str | os.PathLike | ad.AnnData],
    *,
    version: Literal["V2", "V1"] = "V2",
    gene_key: str | None = None,
    layer: str | None = None,
    n_counts_key: str | None = "n_counts",
    gene_mapping: Vocabulary | Mapping[str, str] | str | None = None,
    symbol_key: str | None = None,
    genes: Sequence[str] | None = None,
    min_cells: int = 10,
    method: Literal["exact", "tdigest"] = "exact",
    compression: float = 100,
    context_size: int | None = None,
    name: str = "custom",
    min_overlap: float = 0.1,
    chunk_size: int = 4096,
) -> Vocabulary:
    """Build a Geneformer vocabulary (token ids, gene medians, gene-ID mapping) from a corpus.

    Parameters
    ----------
    corpus, gene_key, layer, n_counts_key, gene_mapping
        As in :func:`gene_medians`.
    method, compression, min_overlap, chunk_size
        As in :func:`gene_medians`.
    version
        Special-token layout: ``"V2"`` (``<pad>``\\ =0, ``<mask>``\\ =1, ``<cls>``\\ =2,
        ``<eos>``\\ =3, cells written as ``<cls>`` genes ``<eos>``) or ``"V1"`` (``<pad>``\\ =0,
        ``<mask>``\\ =1, bare genes). Gene tokens follow, in ascending Ensembl-ID order, as in
        the published dictionaries.
    symbol_key
        Optional ``var`` column of gene symbols, recorded as the vocabulary's gene-name
        dictionary (so data identified by these symbols can be tokenized).
    genes
        Optional Ensembl IDs to restrict the vocabulary to (e.g. protein-coding genes, as the
        V2 vocabulary is).
    min_cells
        Genes with a non-zero count in fewer cells of the corpus are left out.
    context_size
        Tokens per cell, special tokens included; 4096 for V2, 2048 for V1.
    name
        The vocabulary's name (file names when saved; not part of its fingerprint).

    Returns
    -------
    The :class:`Vocabulary`; save it with :meth:`Vocabulary.save`.
    """
    if version not in LAYOUTS:
        raise ValueError(f"version={version!r}; use 'V2' (<cls>/<eos>, 4096) or 'V1' (2048).")
    if int(min_cells) < 1:
        raise ValueError(f"min_cells={min_cells}; it must be at least 1.")
    specials = LAYOUTS[version]
    context = DEFAULT_CONTEXT[version] if context_size is None else int(context_size)
    if context < (3 if version == "V2" else 1):  # <cls>, a gene, <eos>
        raise ValueError(f"context_size={context} leaves no room for genes.")
    wanted = None
    if genes is not None:
        wanted = set(normalize_gene_ids(list(genes))) - {""}
        if not wanted:
            raise ValueError("genes= is empty: pass the Ensembl IDs to keep, or None for all.")
    _check_options(method, compression, chunk_size)
    mapping = _mapping_of(gene_mapping)
    symbols = {}  # read first: a wrong symbol_key fails before the corpus is streamed
    if symbol_key is not None:
        symbols = _corpus_symbols(corpus, gene_key, symbol_key, mapping)
    table = gene_medians(
        corpus,
        gene_key=gene_key,
        layer=layer,
        n_counts_key=n_counts_key,
        gene_mapping=mapping,
        method=method,
        compression=compression,
        min_overlap=min_overlap,
        chunk_size=chunk_size,
    )
    kept = table[table["n_cells"] >= int(min_cells)]
    if wanted is not None:
        kept = kept[kept.index.isin(wanted)]
    if kept.empty:
        restrict = f" among the {len(wanted)} genes= given" if wanted is not None else ""
        raise ValueError(
            f"No gene is expressed in at least min_cells={min_cells} cells{restrict} "
            f"({len(table)} genes seen in {table.attrs['params']['n_cells']} cells; the most "
            f"in {int(table['n_cells'].max()) if len(table) else 0} cells). Lower min_cells, "
            "or add cells to the corpus."
        )
    left_out = len(table) - len(kept)
    if left_out:
        _logging.info(
            f"    {len(kept)} genes in the vocabulary; {left_out} left out (in fewer than "
            f"min_cells={min_cells} cells" + (", or not in genes=)" if wanted is not None else ")")
        )
    gene_list = sorted(kept.index)  # ascending Ensembl ID, as the published dictionaries
    token_ids = {token: i for i, token in enumerate(specials)}
    token_ids.update({gene: len(specials) + i for i, gene in enumerate(gene_list)})
    medians = {gene: float(value) for gene, value in kept["median"].items()}
    in_vocab = set(gene_list)
    names = {k: v for k, v in _names_of(gene_mapping).items() if v in in_vocab}
    for symbol, gene in symbols.items():
        if gene in in_vocab:
            names.setdefault(symbol, gene)
    from ._vocabulary import _build_mapping

    return Vocabulary(
        name=name,
        token_ids=token_ids,
        medians=medians,
        gene_mapping=_build_mapping(token_ids, mapping, names),
        context_size=context,
        special_tokens=version == "V2",
        gene_names=names,
    )


# --- the shell's parts -----------------------------------------------------------------------


def _check_options(method: str, compression: float, chunk_size: int) -> None:
    if method not in ("exact", "tdigest"):
        raise ValueError(f"method={method!r}; use 'exact' or 'tdigest'.")
    if not compression > 0:
        raise ValueError(f"compression={compression}; it must be positive (the reference: 100).")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size}; it must be at least 1.")


def _corpus_items(corpus) -> list:
    """The corpus as a list of paths and AnnData objects, checked to exist."""
    import anndata as ad

    single = isinstance(corpus, (str, os.PathLike, ad.AnnData)) or _is_mudata(corpus)
    items = [corpus] if single else list(corpus)
    if not items:
        raise ValueError(
            "The corpus is empty: pass one or more .h5ad paths or AnnData objects of raw counts."
        )
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                what = "a folder" if path.is_dir() else "no such file"
                raise FileNotFoundError(f"Corpus file {path} cannot be read: {what}.")
        elif not (isinstance(item, ad.AnnData) or _is_mudata(item)):
            raise TypeError(
                f"The corpus holds a {type(item).__name__}; pass .h5ad paths or AnnData objects."
            )
    return items


def _is_mudata(obj) -> bool:
    return type(obj).__name__ == "MuData"


class _opened:
    """Context manager giving ``(AnnData, label)`` for a corpus item; files are opened backed
    and read-only (never modified), and closed afterwards. ``label`` starts the item's
    messages: ``"PATH: "``, ``"corpus item 2: "``, or nothing for a lone AnnData."""

    def __init__(self, item, number: int = 0, total: int = 1) -> None:
        self.item = item
        self.file = None
        self.number, self.total = number, total

    def __enter__(self):
        import anndata as ad

        from .._anndata import rna_modality

        if isinstance(self.item, (str, os.PathLike)):
            try:
                self.file = ad.read_h5ad(self.item, backed="r")
            except OSError as err:
                raise OSError(f"Corpus file {self.item} is not a readable .h5ad: {err}") from err
            return rna_modality(self.file), f"{self.item}: "
        return rna_modality(self.item), f"corpus item {self.number}: " if self.total > 1 else ""

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.file.close()


def _mapping_of(gene_mapping) -> dict[str, str]:
    """``{upper-case identifier: Ensembl ID}`` from a mapping, a vocabulary or a name."""
    if gene_mapping is None:
        return {}
    if isinstance(gene_mapping, str):
        from ..models import get_vocabulary

        gene_mapping = get_vocabulary(gene_mapping)
    if isinstance(gene_mapping, Vocabulary):
        return dict(gene_mapping.gene_mapping)
    if isinstance(gene_mapping, Mapping):
        keys = normalize_gene_ids(list(gene_mapping.keys()))
        out: dict[str, str] = {}
        for key, value in zip(keys, gene_mapping.values(), strict=True):
            if key and isinstance(value, str):
                out.setdefault(key, value)
        return out
    raise TypeError(
        f"gene_mapping is a {type(gene_mapping).__name__}; pass a dict, a Vocabulary or a "
        "vocabulary name such as 'V2'."
    )


def _names_of(gene_mapping) -> dict[str, str]:
    """The gene-name dictionary of a vocabulary given as ``gene_mapping`` (else empty)."""
    if isinstance(gene_mapping, str):
        from ..models import get_vocabulary

        gene_mapping = get_vocabulary(gene_mapping)
    return dict(gene_mapping.gene_names) if isinstance(gene_mapping, Vocabulary) else {}


def _identifiers(adata, gene_key: str | None) -> np.ndarray:
    if gene_key is None:
        return adata.var_names.to_numpy()
    if gene_key not in adata.var:
        raise KeyError(f"No var column {gene_key!r}; var has {list(adata.var.columns)}.")
    return adata.var[gene_key].to_numpy()


def _ensembl_ids(identifiers: np.ndarray, mapping: dict[str, str]) -> np.ndarray:
    """Each column's Ensembl ID after normalising and mapping; ``""`` where it has none."""
    keys = normalize_gene_ids(identifiers)
    if mapping:
        keys = pd.Series(keys).map(lambda k: mapping.get(k, k)).to_numpy(dtype=object)
        keys = normalize_gene_ids(keys)
    usable = np.fromiter((bool(_ENSEMBL.match(k)) for k in keys), dtype=bool, count=len(keys))
    return np.where(usable, keys, "").astype(object)


def _file_gene_ids(adata, gene_key, mapping, min_overlap: float, label: str) -> np.ndarray:
    """Each column's Ensembl ID (``""``: ignored), refusing files with too few of them."""
    identifiers = _identifiers(adata, gene_key)
    ids = _ensembl_ids(identifiers, mapping)
    n_vars, n_ids = len(ids), int((ids != "").sum())
    if n_vars and n_ids / n_vars >= min_overlap and n_ids > 0:
        if n_ids < n_vars:
            _logging.debug(f"    {label}{n_vars - n_ids} of {n_vars} genes have no Ensembl ID")
        return ids
    source = f"var[{gene_key!r}]" if gene_key else "var_names"
    kind = describe_identifiers(normalize_gene_ids(identifiers[:2000]))
    lines = [
        f"{label}{'only' if label else 'Only'} {n_ids} of {n_vars} genes in {source} have an "
        "Ensembl ID "
        f"({n_ids / max(n_vars, 1):.1%}); {source} holds {kind}."
    ]
    better = []
    for column in adata.var.columns:
        dtype = adata.var[column].dtype
        text = dtype.kind in "OSU" or isinstance(dtype, pd.CategoricalDtype)
        if column == gene_key or not text:
            continue
        hits = int((_ensembl_ids(adata.var[column].to_numpy(), mapping) != "").sum())
        if hits > n_ids:
            better.append(f"gene_key={column!r} ({hits} Ensembl IDs)")
    if gene_key is not None:
        hits = int((_ensembl_ids(adata.var_names.to_numpy(), mapping) != "").sum())
        if hits > n_ids:
            better.append(f"gene_key=None for var_names ({hits} Ensembl IDs)")
    if better:
        lines.append("Other columns hold more: " + ", ".join(better) + ".")
    lines.append(
        "A vocabulary is built on Ensembl gene IDs: pass gene_key= naming the var column that "
        "holds them, or gene_mapping='V2' (--gene-mapping V2) to map human symbols through "
        "Geneformer's mapping" + (f", or lower min_overlap (now {min_overlap})." if n_ids else ".")
    )
    raise ValueError(" ".join(lines))


def _add_file(
    adata, ids, index, n_cells, store, layer, n_counts_key, chunk_size, label
) -> np.ndarray:
    """Stream one AnnData's chunks into ``store``; returns the grown per-gene cell counts."""
    from tqdm.auto import tqdm

    from .._anndata import count_matrix, iter_row_chunks
    from .._settings import settings
    from ..pp._checks import check_n_counts, check_raw_counts
    from ..pp._rank_encoding import GeneAggregator
    from ..pp._tokenize import _n_counts

    matrix = count_matrix(adata, layer)
    column_gene = np.full(len(ids), -1, dtype=np.int64)
    for j, gene in enumerate(ids):
        if gene:
            column_gene[j] = index.setdefault(gene, len(index))
    if len(index) > len(n_cells):
        n_cells = np.concatenate([n_cells, np.zeros(len(index) - len(n_cells), np.int64)])
    store.grow(len(index))
    # Columns of one gene are summed by the tokenizer's own aggregator (the "tokens" are
    # gene numbers here), so the values are those the tokenizer ranks.
    dtype = np.result_type(matrix.dtype, np.float32)
    aggregator = GeneAggregator.build(column_gene, np.ones(len(index)), dtype)
    totals_obs = _n_counts(adata, n_counts_key)
    source = label + (f"layers[{layer!r}]" if layer else "X")
    key = n_counts_key if totals_obs is not None else "row sums"
    bar = tqdm(total=adata.n_obs, unit="cells", desc="medians", disable=not settings.progress)
    with bar:
        for begin, stop, chunk in iter_row_chunks(matrix, int(chunk_size)):
            check_raw_counts(chunk, begin, adata.obs_names, source)
            if totals_obs is None:  # as the tokenizer: float64 row sums over all genes
                totals = np.asarray(chunk.astype(np.float64).sum(axis=1)).ravel()
            else:
                totals = np.asarray(totals_obs[begin:stop])
                if totals.dtype.kind not in "biuf" or totals.dtype.itemsize > 8:
                    totals = totals.astype(np.float64)
            check_n_counts(totals, chunk, begin, adata.obs_names, key)
            summed = (chunk @ aggregator.matrix).tocsr()
            summed.eliminate_zeros()
            values = normalised_values(summed, totals)
            genes = aggregator.tokens[summed.indices]
            store.add(genes, values)
            n_cells += np.bincount(genes, minlength=len(n_cells))
            bar.update(stop - begin)
    return n_cells


def _corpus_symbols(corpus, gene_key, symbol_key: str, mapping) -> dict[str, str]:
    """``{symbol: Ensembl ID}`` read from each file's ``var[symbol_key]`` (first seen wins)."""
    out: dict[str, str] = {}
    items = _corpus_items(corpus)
    for number, item in enumerate(items):
        with _opened(item, number, len(items)) as (adata, label):
            if symbol_key not in adata.var:
                raise KeyError(
                    f"{label}{'no' if label else 'No'} var column {symbol_key!r} (symbol_key); "
                    "var has "
                    f"{list(adata.var.columns)}."
                )
            ids = _ensembl_ids(_identifiers(adata, gene_key), mapping)
            symbols = adata.var[symbol_key].to_numpy()
            for symbol, gene in zip(symbols, ids, strict=True):
                if gene and isinstance(symbol, str) and symbol.strip():
                    out.setdefault(symbol.strip(), gene)
    return out
