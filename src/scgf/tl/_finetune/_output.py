"""The output folder: empty, resumed or replaced; checkpoints removed once the model is saved."""

from __future__ import annotations

import shutil
from pathlib import Path

# Imported lazily elsewhere: importing scgf._train loads transformers.
FINGERPRINT_FILE = "fingerprint.json"  # written by scgf._train.last_checkpoint
METADATA_FILE = "scgf.json"  # scgf._train._saved.METADATA_FILE

SEARCH_DB = "search.db"
SEARCH_DIR = "search"
# Files that mark a folder as a scgf fine-tuning run (overwrite= only deletes such folders).
MARKERS = (FINGERPRINT_FILE, METADATA_FILE, SEARCH_DB)


def check_output_dir(folder, *, resume: bool, overwrite: bool) -> str:
    """``"fresh"``, ``"resume"`` or ``"overwrite"``; refuses a non-empty folder otherwise."""
    folder = Path(folder)
    if resume and overwrite:
        raise ValueError("Pass resume=True or overwrite=True, not both.")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output_dir {folder} is a file; give a folder path.")
    contents = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not contents:
        return "fresh"
    if resume:
        return "resume"
    if overwrite:
        if not any((folder / m).exists() for m in MARKERS):
            raise FileExistsError(
                f"output_dir {folder} holds files that scgf.tl.finetune did not write (e.g. "
                f"{contents[:3]}); overwrite=True only replaces a previous fine-tuning run. "
                "Give an empty or new folder."
            )
        return "overwrite"
    raise FileExistsError(
        f"output_dir {folder} is not empty ({len(contents)} entries, e.g. {contents[:3]}). "
        "Pass resume=True to continue the training saved there, overwrite=True to replace "
        "it, or an empty or new folder."
    )


def finished(folder) -> bool:
    """Whether the folder holds a finished run (its model saved, no checkpoint left)."""
    folder = Path(folder)
    return (folder / METADATA_FILE).exists() and not any(folder.glob("checkpoint-*"))


def prepare_output_dir(folder, state: str) -> None:
    """Empty a folder being overwritten (the caller checked it is a previous run)."""
    folder = Path(folder)
    if state == "overwrite":
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def clean_checkpoints(folder) -> None:
    """Remove the Trainer's checkpoints and the search's trial folders (the model is saved)."""
    folder = Path(folder)
    for path in [*folder.glob("checkpoint-*"), folder / SEARCH_DIR]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
