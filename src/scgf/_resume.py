"""What a resumable run was computed from, so that it resumes only from the same thing.

Every store that can resume (embeddings in a backed file, perturbation checkpoints, the
command line's partial output files) records a *fingerprint*: the cells (names and count),
the tokens (every cell's length, a sample of rows, the vocabulary), the model (weight hash)
and the parameters. A later run compares its own fingerprint with the saved one and refuses,
naming what differs, instead of mixing results of different data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ._anndata import row_lengths

# Token rows hashed in full, spread evenly over the matrix (the lengths cover every cell).
SAMPLED_ROWS = 64


class ResumeMismatchError(ValueError):
    """Saved progress belongs to a run on other data, another model or other parameters."""


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def cells_fingerprint(obs_names) -> str:
    """Hash of the cell names in order (so a reordered or other set of cells differs)."""
    names = "\n".join(map(str, obs_names)).encode()
    return f"{len(obs_names)}:{hashlib.sha256(names).hexdigest()[:16]}"


def tokens_fingerprint(tokens) -> str:
    """Hash of a token matrix (CSR, or an AnnData backed sparse dataset; the same value for
    both): every cell's length and the full rows of up to ``SAMPLED_ROWS`` cells spread over
    the matrix.

    Reading every row of a large backed matrix would cost a full pass before resuming; the
    lengths of all cells plus whole rows spread over the matrix catch re-tokenized, reordered
    or other data in practice.
    """
    lengths = row_lengths(tokens)
    n = len(lengths)
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLED_ROWS)).astype(int))
    sample = [np.asarray(tokens[int(r) : int(r) + 1].data, dtype=np.int64) for r in rows]
    return _digest(lengths.astype(np.int64), *sample)


def as_text(fingerprint: dict) -> str:
    """A fingerprint as stable JSON (for file attributes and ``params.json``)."""
    return json.dumps(fingerprint, sort_keys=True, default=str)


def check_same(saved: str | dict, current: dict, where: str, remedy: str) -> None:
    """Raise :class:`ResumeMismatchError` naming every part of ``current`` that differs from
    the ``saved`` fingerprint (JSON text or dict)."""
    if isinstance(saved, str):
        try:
            saved = json.loads(saved)
        except json.JSONDecodeError:
            saved = {}
    current = json.loads(as_text(current))
    if saved == current:
        return
    differs = []
    for part in sorted(set(saved) | set(current)):
        if saved.get(part) != current.get(part):
            differs.append(f"{part} (saved {saved.get(part)!r}, now {current.get(part)!r})")
    if not differs:  # only parts missing on one side and None on the other (a newer option
        return  # at its default): the same run
    raise ResumeMismatchError(
        f"The progress saved in {where} was computed from something else: "
        + "; ".join(differs)
        + f". It is not used, so results are never mixed: {remedy}"
    )


class ProgressFolder:
    """Saved progress of a resumable run: a folder of parts written atomically.

    ``fingerprint.json`` says what the run is computed from; each :meth:`save` writes one
    ``part-NNNNNN.npz`` under a temporary name and renames it, so a run killed at any moment
    (even ``SIGKILL``) leaves whole parts only. A folder whose fingerprint differs is refused
    (or, with ``restart``, emptied).

    Parameters
    ----------
    folder
        Where the parts go.
    fingerprint
        What the run is computed from (see :func:`check_same`).
    remedy
        What to tell a user whose folder belongs to another run.
    restart
        Discard a folder of another run instead of refusing it.
    """

    def __init__(self, folder: str | Path, fingerprint: dict, remedy: str, restart: bool = False):
        self.folder = Path(folder)
        saved = self.folder / "fingerprint.json"
        if restart and self.folder.exists():
            self.remove()
        if saved.exists():
            check_same(saved.read_text(), fingerprint, str(self.folder), remedy)
        else:
            if self.folder.exists() and any(self.folder.glob("part-*.npz")):
                raise ResumeMismatchError(
                    f"{self.folder} holds saved parts without a fingerprint (an older scgf or "
                    f"another program wrote them); they are not used. {remedy}"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / ".fingerprint.json"
            tmp.write_text(as_text(fingerprint))
            tmp.rename(saved)

    @property
    def part_paths(self) -> list[Path]:
        """The saved parts, in the order they were written."""
        return sorted(self.folder.glob("part-*.npz"))

    def parts(self, keys: tuple[str, ...] | None = None):
        """Yield each saved part as a dict of arrays (only ``keys``, if given), in the order
        they were written."""
        for path in self.part_paths:
            with np.load(path) as data:
                yield {k: data[k] for k in (data.files if keys is None else keys)}

    def save(self, part: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None):
        """Write one part atomically, and optionally the run's running state as of this part
        (e.g. sums over all cells so far), which replaces the previous state.

        The state is written before its part and the older state removed after it, so that
        whenever the process stops, the state matching the last whole part is on disk.
        """
        index = len(self.part_paths)
        if state is None:
            self._write(f"part-{index:06d}.npz", part)
            return
        current = f"state-{index:06d}.npz"
        self._write(current, state)
        self._write(f"part-{index:06d}.npz", part)
        for old in self.folder.glob("state-*.npz"):
            if old.name != current:
                old.unlink()

    def state(self) -> dict[str, np.ndarray] | None:
        """The running state saved with the last part, or ``None``."""
        paths = self.part_paths
        if not paths:
            return None
        path = self.folder / paths[-1].name.replace("part-", "state-")
        if not path.exists():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def _write(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.folder / f".{name}"
        np.savez(tmp, **arrays)
        tmp.rename(self.folder / name)

    def remove(self) -> None:
        """Delete the folder (the run is finished or discarded)."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
