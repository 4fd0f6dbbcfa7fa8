"""The errors of ``scgf.tl.pretrain`` (importable without torch)."""


class OutputDirInUseError(ValueError):
    """``output_dir`` already holds files and neither ``resume`` nor ``overwrite`` was given."""


class EmptyCorpusError(ValueError):
    """The corpus holds no cell with tokens."""
