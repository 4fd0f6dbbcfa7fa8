"""The token vocabulary of a Geneformer model: token ids, gene medians and ID mapping."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ._gene_ids import normalize_gene_ids

SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>", "<eos>")


def _load_pickle(path: str | os.PathLike) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ValueError(
            f"{path} is not a readable dictionary pickle ({type(err).__name__}: {err}); it may "
            "be truncated or corrupt: copy or download it again."
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a dictionary: it is not a Geneformer "
            "dictionary file."
        )
    return obj


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """A Geneformer vocabulary.

    Attributes
    ----------
    name
        ``"gc104M"`` (V2, 104M-cell corpus; identical to ``gc95M``), ``"gc30M"`` (V1) or a user
        name for custom dictionaries.
    token_ids
        Ensembl ID (or special token such as ``<cls>``) → token id.
    medians
        Ensembl ID → non-zero median of normalised expression across the pretraining corpus.
    gene_mapping
        Upper-case identifier (Ensembl ID, retired ID, symbol, alias) → Ensembl ID in the
        vocabulary. Built from the published mapping dictionary, the gene-name dictionary and
        the vocabulary's own IDs.
    context_size
        Number of tokens a model reads, special tokens included (2048 for V1, 4096 for V2).
    special_tokens
        Whether cells are written as ``<cls>`` genes… ``<eos>`` (V2) or as bare genes (V1).
    gene_names
        Gene symbol (original case) → Ensembl ID, Geneformer's ``gene_name_id_dict``; kept to
        be saved with the vocabulary (lookups go through :attr:`gene_mapping`).
    """

    name: str
    token_ids: dict[str, int] = field(repr=False)
    medians: dict[str, float] = field(repr=False)
    gene_mapping: dict[str, str] = field(repr=False)
    context_size: int
    special_tokens: bool
    gene_names: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.special_tokens and not {"<cls>", "<eos>"} <= self.token_ids.keys():
            raise ValueError(
                f"Vocabulary {self.name!r} has no <cls>/<eos> tokens but special_tokens=True: "
                "V1 (gc30M) dictionaries are read without special tokens."
            )
        missing = [g for g in self.gene_ids if g not in self.medians]
        if missing:
            raise ValueError(
                f"Vocabulary {self.name!r}: {len(missing)} genes of the token dictionary have no "
                f"median (e.g. {missing[:3]}); the median dictionary does not belong to it."
            )

    @classmethod
    def from_files(
        cls,
        token_dictionary: str | os.PathLike,
        gene_median: str | os.PathLike,
        *,
        gene_mapping: str | os.PathLike | None = None,
        gene_names: str | os.PathLike | None = None,
        context_size: int | None = None,
        special_tokens: bool | None = None,
        name: str = "custom",
    ) -> Vocabulary:
        """Load a vocabulary from Geneformer-format pickled dictionaries.

        Parameters
        ----------
        token_dictionary
            Pickle of ``{Ensembl ID or special token: token id}``.
        gene_median
            Pickle of ``{Ensembl ID: median}``; must cover every gene of the token dictionary.
        gene_mapping
            Optional pickle of ``{identifier: Ensembl ID}`` used to collapse symbols, aliases
            and retired IDs (Geneformer's ``ensembl_mapping_dict``).
        gene_names
            Optional pickle of ``{gene symbol: Ensembl ID}`` (Geneformer's ``gene_name_id_dict``).
        context_size
            Tokens per cell. Defaults to 4096 with ``<cls>``/``<eos>`` tokens, else 2048.
        special_tokens
            Write cells as ``<cls>`` … ``<eos>``. Defaults to whether the token dictionary
            holds both tokens.
        name
            A name recorded with the tokens, so that tools can refuse tokens of another
            vocabulary.

        Returns
        -------
        The vocabulary.
        """
        token_ids = {str(k): int(v) for k, v in _load_pickle(token_dictionary).items()}
        medians = {str(k): float(v) for k, v in _load_pickle(gene_median).items()}
        has_specials = {"<cls>", "<eos>"} <= token_ids.keys()
        if special_tokens is None:
            special_tokens = has_specials
        if context_size is None:
            context_size = 4096 if special_tokens else 2048
        names = _load_pickle(gene_names) if gene_names else {}
        mapping = _build_mapping(
            token_ids, _load_pickle(gene_mapping) if gene_mapping else {}, names
        )
        return cls(
            name=name,
            token_ids=token_ids,
            medians=medians,
            gene_mapping=mapping,
            context_size=int(context_size),
            special_tokens=bool(special_tokens),
            gene_names={
                k: v for k, v in names.items() if isinstance(k, str) and isinstance(v, str)
            },
        )

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, **kwargs) -> Vocabulary:
        """Load the ``token_dictionary*.pkl``/``gene_median_dictionary*.pkl`` files of a folder.

        Parameters
        ----------
        directory
            A folder holding Geneformer dictionaries (for example a checkpoint folder).
        **kwargs
            Passed to :meth:`from_files` (``context_size``, ``special_tokens``, ``name``).

        Returns
        -------
        The vocabulary.
        """
        files = find_dictionary_files(directory)
        if files is None:
            raise FileNotFoundError(
                f"{directory} holds no token_dictionary*.pkl and gene_median_dictionary*.pkl."
            )
        kwargs.setdefault("name", f"custom:{Path(directory).name}")
        return cls.from_files(**files, **kwargs)

    # --- derived arrays -------------------------------------------------------------------

    @property
    def version(self) -> str:
        """``"V2"`` for ``<cls>``/``<eos>`` vocabularies, else ``"V1"``."""
        return "V2" if self.special_tokens else "V1"

    @cached_property
    def gene_ids(self) -> tuple[str, ...]:
        """Gene Ensembl IDs of the vocabulary (special tokens left out)."""
        return tuple(k for k in self.token_ids if k not in SPECIAL_TOKENS)

    @property
    def n_genes(self) -> int:
        """Number of gene tokens."""
        return len(self.gene_ids)

    @property
    def cls_id(self) -> int | None:
        """Token id of ``<cls>`` (None without special tokens)."""
        return self.token_ids["<cls>"] if self.special_tokens else None

    @property
    def eos_id(self) -> int | None:
        """Token id of ``<eos>`` (None without special tokens)."""
        return self.token_ids["<eos>"] if self.special_tokens else None

    @property
    def pad_id(self) -> int:
        """Token id of ``<pad>``."""
        return self.token_ids.get("<pad>", 0)

    @property
    def max_genes(self) -> int:
        """Genes kept per cell: the context minus the special tokens."""
        return self.context_size - (2 if self.special_tokens else 0)

    @cached_property
    def id_of_token(self) -> np.ndarray:
        """Array indexed by token id giving the Ensembl ID (or special token name)."""
        out = np.empty(max(self.token_ids.values()) + 1, dtype=object)
        for key, tok in self.token_ids.items():
            out[tok] = key
        return out

    @cached_property
    def inverse_median(self) -> np.ndarray:
        """Array indexed by token id holding ``1 / median`` (0 for special tokens)."""
        out = np.zeros(len(self.id_of_token), dtype=np.float64)
        for gene in self.gene_ids:
            out[self.token_ids[gene]] = 1.0 / self.medians[gene]
        return out

    def map_genes(self, ids: pd.Index | np.ndarray | list) -> np.ndarray:
        """Token id of each identifier, ``-1`` where it is not in the vocabulary.

        Identifiers are upper-cased and Ensembl version suffixes dropped, then looked up in
        :attr:`gene_mapping` (symbols, aliases, retired and current Ensembl IDs).

        Parameters
        ----------
        ids
            Gene identifiers, one per variable.

        Returns
        -------
        An ``int64`` array of token ids.
        """
        keys = pd.Series(normalize_gene_ids(ids))
        ensembl = keys.map(self.gene_mapping)
        tokens = ensembl.map(self.token_ids)
        return tokens.fillna(-1).to_numpy(dtype=np.int64)

    @cached_property
    def fingerprint(self) -> str:
        """A content hash of what tokens mean: every (identifier, token id, median) and the
        special-token layout. Two vocabularies with the same fingerprint give the same tokens
        for the same counts; the name plays no part, so two custom vocabularies both called
        "custom" are still told apart."""
        digest = hashlib.sha256(f"special_tokens={self.special_tokens}\n".encode())
        for key, tok in sorted(self.token_ids.items(), key=lambda item: item[1]):
            median = self.medians.get(key)
            digest.update(f"{tok}\t{key}\t{median!r}\n".encode())
        return digest.hexdigest()[:16]

    def tokens_to_ids(self, tokens: np.ndarray) -> np.ndarray:
        """Ensembl IDs (or special token names) of an array of token ids."""
        return self.id_of_token[np.asarray(tokens, dtype=np.int64)]

    def describe(self) -> dict:
        """The facts recorded with tokens: name, content fingerprint, version, context and
        special tokens."""
        return {
            "vocabulary": self.name,
            "vocabulary_fingerprint": self.fingerprint,
            "version": self.version,
            "context_size": self.context_size,
            "special_tokens": self.special_tokens,
        }

    # --- saving and loading -----------------------------------------------------------------

    def save(
        self,
        folder: str | os.PathLike,
        *,
        format: Literal["scgf", "pickle", "both"] = "both",
        overwrite: bool = False,
    ) -> list[Path]:
        """Write the vocabulary into ``folder`` (created if needed; it may be a model folder).

        Parameters
        ----------
        folder
            Where to write. A folder that already holds vocabulary files is refused unless
            ``overwrite=True``, which replaces them all (two token dictionaries in one folder
            would make it ambiguous which one a model reads).
        format
            ``"scgf"``: one ``scgf_vocabulary.json`` holding everything (name, layout, context
            size, token ids, medians, mappings, fingerprint). ``"pickle"``: the reference's four
            dictionaries, readable by plain :mod:`pickle` and by Geneformer's own tokenizer:
            ``token_dictionary_<name>.pkl`` (str → int), ``gene_median_dictionary_<name>.pkl``
            (str → float), ``gene_name_id_dict_<name>.pkl`` (symbol → Ensembl ID) and
            ``ensembl_mapping_dict_<name>.pkl`` (upper-case identifier → Ensembl ID).
            The pickles do not record the context size: loaded alone they give 4096 (V2) or
            2048 (V1). ``"both"`` (the default) writes both.
        overwrite
            Replace the vocabulary files already in ``folder``.

        Returns
        -------
        The paths written.
        """
        if format not in ("scgf", "pickle", "both"):
            raise ValueError(f"format={format!r}; use 'scgf', 'pickle' or 'both'.")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file; save a vocabulary into a folder.")
        existing = vocabulary_files(folder)
        if existing and not overwrite:
            raise FileExistsError(
                f"{folder} already holds a vocabulary ({', '.join(p.name for p in existing)}). "
                "Choose another folder, or pass overwrite=True (--overwrite) to replace it."
            )
        folder.mkdir(parents=True, exist_ok=True)
        for path in existing:
            path.unlink()
        written = []
        if format in ("scgf", "both"):
            written.append(_write_atomic(folder / VOCABULARY_FILE, self._json_bytes()))
        if format in ("pickle", "both"):
            for role, content in self._pickle_dicts().items():
                path = folder / f"{role}_{_file_stem(self.name)}.pkl"
                written.append(_write_atomic(path, pickle.dumps(content, protocol=4)))
        return written

    def _pickle_dicts(self) -> dict[str, dict]:
        """The reference's four dictionaries, with plain Python keys and values."""
        return {
            "token_dictionary": {str(k): int(v) for k, v in self.token_ids.items()},
            "gene_median_dictionary": {str(k): float(v) for k, v in self.medians.items()},
            "gene_name_id_dict": dict(self.gene_names),
            "ensembl_mapping_dict": dict(self.gene_mapping),
        }

    def _json_bytes(self) -> bytes:
        content = {
            "format": "scgf-vocabulary",
            "format_version": 1,
            "name": self.name,
            "version": self.version,
            "context_size": self.context_size,
            "special_tokens": self.special_tokens,
            "fingerprint": self.fingerprint,
            "token_ids": self.token_ids,
            "medians": self.medians,  # floats written by repr: read back bit for bit
            "gene_mapping": self.gene_mapping,
            "gene_names": self.gene_names,
        }
        return json.dumps(content, separators=(",", ":")).encode()

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> Vocabulary:
        """Read a saved vocabulary: a ``scgf_vocabulary.json`` file, or a folder holding one
        (preferred) or the reference's pickles (read with :meth:`from_directory`).

        Parameters
        ----------
        path
            The file or folder.
        **kwargs
            For pickles only: passed to :meth:`from_files` (``context_size``, ``name``, …).

        Returns
        -------
        The vocabulary, identical (token ids, medians, mappings, fingerprint) to the one saved.
        """
        path = Path(path)
        if path.is_dir() and (path / VOCABULARY_FILE).is_file():
            path = path / VOCABULARY_FILE
        if path.is_dir():
            return cls.from_directory(path, **kwargs)
        if not path.is_file():
            raise FileNotFoundError(f"No vocabulary at {path}: no such file or folder.")
        try:
            content = json.loads(path.read_bytes())
            if content.get("format") != "scgf-vocabulary":
                raise ValueError("not an scgf vocabulary file")
            vocab = cls(
                name=str(content["name"]),
                token_ids={str(k): int(v) for k, v in content["token_ids"].items()},
                medians={str(k): float(v) for k, v in content["medians"].items()},
                gene_mapping=dict(content["gene_mapping"]),
                context_size=int(content["context_size"]),
                special_tokens=bool(content["special_tokens"]),
                gene_names=dict(content.get("gene_names", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not a readable scgf vocabulary ({type(err).__name__}: {err}); it "
                "may be truncated or edited: save the vocabulary again."
            ) from err
        if vocab.fingerprint != content.get("fingerprint"):
            raise ValueError(
                f"{path} records fingerprint {content.get('fingerprint')} but its content hashes "
                f"to {vocab.fingerprint}: the file was changed after it was saved. Save the "
                "vocabulary again."
            )
        return vocab


# The file of scgf's own vocabulary format.
VOCABULARY_FILE = "scgf_vocabulary.json"
_PICKLE_PATTERNS = (
    "token_dictionary*.pkl",
    "gene_median_dictionary*.pkl",
    "gene_name_id_dict*.pkl",
    "ensembl_mapping_dict*.pkl",
)


def vocabulary_files(folder: str | os.PathLike) -> list[Path]:
    """The vocabulary files (scgf's and the reference's pickles) inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [folder / VOCABULARY_FILE] if (folder / VOCABULARY_FILE).is_file() else []
    for pattern in _PICKLE_PATTERNS:
        found.extend(sorted(folder.glob(pattern)))
    return found


def _file_stem(name: str) -> str:
    """A vocabulary name made safe for file names (``custom:my model`` → ``custom_my_model``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "custom"


def _write_atomic(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file, so a reader never sees half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _build_mapping(token_ids: dict[str, int], mapping: dict, names: dict) -> dict[str, str]:
    """Upper-case identifier → vocabulary Ensembl ID.

    The published mapping dictionary wins; gene names fill in symbols it lacks (V1's mapping
    is an identity over its IDs, so V1 symbols come from the name dictionary); every vocabulary
    ID maps to itself. Entries pointing outside the vocabulary are dropped, as the reference
    does.
    """
    genes = {k for k in token_ids if k not in SPECIAL_TOKENS}
    out: dict[str, str] = {}
    for source in (mapping, names):
        for key, value in source.items():
            if isinstance(key, str) and value in genes:
                out.setdefault(key.strip().upper(), value)
    for gene in genes:
        out.setdefault(gene.upper(), gene)
    return out


def find_dictionary_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The Geneformer dictionary files inside ``directory``, or ``None`` if it has none."""
    directory = Path(directory)

    def first(pattern: str) -> Path | None:
        matches = sorted(directory.glob(pattern))
        return matches[0] if matches else None

    token = first("token_dictionary*.pkl")
    median = first("gene_median_dictionary*.pkl")
    if token is None or median is None:
        return None
    files: dict[str, Path] = {"token_dictionary": token, "gene_median": median}
    mapping = first("ensembl_mapping_dict*.pkl")
    names = first("gene_name_id_dict*.pkl")
    if mapping is not None:
        files["gene_mapping"] = mapping
    if names is not None:
        files["gene_names"] = names
    return files
