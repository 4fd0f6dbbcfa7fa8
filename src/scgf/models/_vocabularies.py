"""Which vocabulary a model reads: published dictionaries, a folder's own, or its config shape."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ..vocab import Vocabulary, find_dictionary_files
from ..vocab._vocabulary import VOCABULARY_FILE
from ._fetch import UnknownModelError, fetch_vocabulary
from ._registry import published_vocabularies

# Names that mean a published vocabulary rather than a model.
VOCABULARY_NAMES = {
    "gc104M": "gc104M",
    "gc95M": "gc104M",
    "V2": "gc104M",
    "gc30M": "gc30M",
    "V1": "gc30M",
}
# Token-dictionary sizes of the published vocabularies (special tokens included).
_PUBLISHED_SIZES = {"gc104M": 20275, "gc30M": 25426}


@cache
def published_vocabulary(name: str) -> Vocabulary:
    """A published vocabulary (``"gc104M"`` or ``"gc30M"``), downloaded once and kept."""
    spec = published_vocabularies()[name]
    return Vocabulary.from_files(
        **fetch_vocabulary(name),
        context_size=spec.context_size,
        special_tokens=spec.special_tokens,
        name=name,
    )


def vocabulary_of_config(config: dict, where: str) -> Vocabulary:
    """The published vocabulary whose size and context a model config has.

    Parameters
    ----------
    config
        The model's ``config.json`` as a dict.
    where
        What the config belongs to, for the error message.
    """
    shape = (config.get("vocab_size"), config.get("max_position_embeddings"))
    for name, spec in published_vocabularies().items():
        if shape == (_PUBLISHED_SIZES[name], spec.context_size):
            return published_vocabulary(name)
    raise UnknownModelError(
        f"{where} has vocab_size={shape[0]} and max_position_embeddings={shape[1]}, "
        "which match no published vocabulary (V1 gc30M: 25426/2048, V2 gc104M: 20275/4096). "
        "Put the model's token_dictionary*.pkl and gene_median_dictionary*.pkl in the folder, "
        "or pass a scgf.vocab.Vocabulary built with Vocabulary.from_files(...)."
    )


def _published_name(files: dict[str, Path]) -> str | None:
    """The published vocabulary whose token and median dictionaries these files are."""
    import pooch

    digests = {
        role: pooch.file_hash(str(files[role]), alg="sha256")
        for role in ("token_dictionary", "gene_median")
    }
    for name, spec in published_vocabularies().items():
        if all(spec.files[role].sha256 == digest for role, digest in digests.items()):
            return name
    return None


def vocabulary_of_folder(folder: Path, config: dict | None) -> Vocabulary:
    """The vocabulary of a checkpoint folder: scgf's own ``scgf_vocabulary.json`` (a custom
    vocabulary saved by :meth:`~scgf.vocab.Vocabulary.save`), else its dictionary pickles
    (recognised as the published ones by their sha256, else read as a custom vocabulary whose
    context is the config's ``max_position_embeddings``), else the published vocabulary its
    config's shape matches."""
    if (folder / VOCABULARY_FILE).is_file():
        return _fits(Vocabulary.load(folder), config, folder)
    files = find_dictionary_files(folder)
    if files is None:
        if config is None:
            raise UnknownModelError(
                f"{folder} has neither Geneformer dictionary files (token_dictionary*.pkl, "
                "gene_median_dictionary*.pkl) nor a config.json to identify its vocabulary."
            )
        return vocabulary_of_config(config, str(folder / "config.json"))
    published = _published_name(files)
    if published is None:
        context = (config or {}).get("max_position_embeddings")
        return _fits(Vocabulary.from_directory(folder, context_size=context), config, folder)
    spec = published_vocabularies()[published]  # the published files, read locally
    vocab = Vocabulary.from_files(
        **files,
        context_size=spec.context_size,
        special_tokens=spec.special_tokens,
        name=published,
    )
    return _fits(vocab, config, folder)


def _fits(vocab: Vocabulary, config: dict | None, folder: Path) -> Vocabulary:
    """``vocab``, refused when the folder's model cannot read its token ids."""
    size = (config or {}).get("vocab_size")
    largest = max(vocab.token_ids.values())
    if size is not None and largest >= int(size):
        raise UnknownModelError(
            f"{folder} holds the {vocab.name} vocabulary (token ids up to {largest}) but its "
            f"config.json has vocab_size={size}: the dictionaries do not belong to this model. "
            "Put the vocabulary the model was trained with in the folder."
        )
    return vocab
