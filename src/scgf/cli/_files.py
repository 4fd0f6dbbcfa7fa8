"""Input and output files of the command line: checked inputs, and outputs that are whole or
absent (written under a partial name beside the output, renamed on success)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .._resume import as_text, check_same

PARTIAL_SUFFIX = ".partial"
SOURCE_ATTR = "scgf_source"  # root attribute of a partial file: the input it was copied from


class InputFileError(ValueError):
    """An input path is missing, a directory, or not an ``.h5ad`` (HDF5) file."""


def check_input(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, checked to be an existing HDF5 file."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist.")
    if path.is_dir():
        raise InputFileError(f"{path} is a directory; give the path of an .h5ad file.")
    if not h5py.is_hdf5(path):
        raise InputFileError(
            f"{path} is not an .h5ad (HDF5) file. Convert other formats with anndata or "
            "scanpy first (e.g. sc.read_10x_h5(...).write_h5ad('cells.h5ad'))."
        )
    return path


def partial_path(target: Path) -> Path:
    """Where the output is written until the command succeeds."""
    return target.with_name(target.name + PARTIAL_SUFFIX)


class PartialOutput:
    """``OUTPUT`` written as ``OUTPUT.partial`` and renamed when the command succeeds.

    A fresh run copies the input to the partial file and records the input's sha256 in it. A
    run that finds a partial file of the same input resumes it (``resumable``); a partial file
    of another input is refused, never mixed. Writing in place (``INPUT`` = ``OUTPUT``)
    writes the input file itself, whose own stores keep it whole.

    Parameters
    ----------
    source, target
        The input and output paths.
    resumable
        Whether progress saved in the partial file can be resumed (``scgf embed``), or the
        partial file is removed on failure (``scgf tokenize``).
    """

    def __init__(self, source: Path, target: Path, *, resumable: bool):
        self.source, self.target = Path(source), Path(target)
        self.in_place = self.target.exists() and self.source.resolve() == self.target.resolve()
        self.partial = self.target if self.in_place else partial_path(self.target)
        self.resumable = resumable
        self.resuming = False

    def open(self) -> Path:
        """Prepare and return the file to work on."""
        if self.in_place:
            return self.partial
        import pooch  # imported here: building the parser stays light

        digest = pooch.file_hash(str(self.source), alg="sha256")
        if self.partial.exists() and self.resumable:
            check_same(
                _source_of(self.partial),
                {"input": digest},
                str(self.partial),
                f"delete {self.partial} to start again, or give another output path.",
            )
            self.resuming = True
            if readable(self.partial):
                return self.partial
            # Killed while writing it: start from a fresh copy; the progress saved beside
            # the file (whole parts only) still applies, its fingerprint checked as usual.
        tmp = self.partial.with_name(self.partial.name + ".copying")
        shutil.copyfile(self.source, tmp)
        _mark_source(tmp, digest)
        os.replace(tmp, self.partial)
        return self.partial

    def commit(self) -> None:
        """The command succeeded: the partial file becomes the output."""
        if not self.in_place:
            _mark_source(self.partial, None)
            os.replace(self.partial, self.target)

    def abandon(self, *, keep: bool) -> None:
        """The command failed: keep the partial file (progress to resume) or remove it."""
        if not self.in_place and not keep and self.partial.exists():
            self.partial.unlink()


def write_whole(source: Path, target: Path, write: Callable[[Path], None]) -> None:
    """``write(path)`` on a copy of ``source`` that becomes ``target`` when it succeeds; on
    failure the copy is removed (the output is whole, or not written)."""
    output = PartialOutput(source, target, resumable=False)
    work = output.open()
    try:
        write(work)
    except BaseException:
        output.abandon(keep=False)
        raise
    output.commit()


def write_adata(adata, target: Path) -> None:
    """``adata.write_h5ad`` to ``target``, whole or not at all: written under the partial
    name and renamed on success, the partial file removed on failure."""
    partial = partial_path(target)
    try:
        adata.write_h5ad(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def check_output_folder(*paths: Path | None) -> None:
    """Refuse outputs whose folder does not exist, before any work is done."""
    for path in paths:
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise OSError(f"The output folder {Path(path).parent} does not exist.")


def write_resumable(
    source: Path, target: Path, work: Callable[[Path], None], *, key: str, restart: bool
) -> None:
    """``work(path)`` on a copy of ``source`` that becomes ``target`` when it succeeds,
    resuming the interrupted run of ``key`` saved there (discarded first with ``restart``).
    A failed run keeps the copy when it saved progress, to resume."""
    from .._resume import ResumeMismatchError
    from ..tl._embedding_store import progress_folder

    if restart:
        partial_path(target).unlink(missing_ok=True)
        shutil.rmtree(progress_folder(partial_path(target), key), ignore_errors=True)
    output = PartialOutput(source, target, resumable=True)
    path = output.open()
    if output.resuming:
        print(f"resuming the interrupted run in {path}")
    try:
        work(path)
    except BaseException as err:
        keep = has_progress(progress_folder(path, key))
        output.abandon(keep=keep)
        if keep and not isinstance(err, ResumeMismatchError):
            err.add_note(f"progress is saved in {path}: run the same command again to resume")
        raise
    output.commit()


def run_backed(path: Path, func: Callable, **options) -> None:
    """``func(adata, **options)`` on the ``.h5ad`` at ``path`` opened backed for writing."""
    import anndata as ad

    adata = ad.read_h5ad(path, backed="r+")
    try:
        func(adata, **options)
    finally:
        adata.file.close()


def _mark_source(path: Path, digest: str | None) -> None:
    import h5py

    with h5py.File(path, "r+") as handle:
        if digest is None:
            handle.attrs.pop(SOURCE_ATTR, None)
        else:
            handle.attrs[SOURCE_ATTR] = as_text({"input": digest})


def _source_of(path: Path) -> str:
    import h5py

    with h5py.File(path, "r") as handle:
        return str(handle.attrs.get(SOURCE_ATTR, "{}"))


def has_progress(folder: Path) -> bool:
    """Whether a progress folder (:class:`scgf._resume.ProgressFolder`) holds saved parts."""
    return folder.is_dir() and any(folder.glob("part-*.npz"))


def readable(path: Path) -> bool:
    """Whether an HDF5 file opens and its top level reads (a kill during a write can leave a
    partial file that does not)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            list(handle.keys())
            dict(handle.attrs)
    except OSError:
        return False
    return True


def read_json_file(path: str | Path, what: str):
    """The JSON content of the user's file ``path``; ``what`` names it in the errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The {what} file {path} does not exist.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from err
