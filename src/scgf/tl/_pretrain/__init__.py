"""``scgf.tl.pretrain``: masked-language-model pretraining (sub-package).

- :mod:`._api`: the shell (arguments, output folder, Trainer, metadata);
- :mod:`._corpus`: the corpus as token datasets with bounded memory (AnnData, ``.h5ad`` files,
  Hugging Face datasets);
- :mod:`._architectures`: the published model shapes by name;
- :mod:`._masking`: masks seeded per cell and epoch (resumable, fixed held-out masks);
- :mod:`._trainer`: the Trainer with its own collator for the held-out cells;
- :mod:`._errors`: the exceptions.
"""

from ._api import pretrain
from ._architectures import ARCHITECTURES, architecture_names
from ._errors import EmptyCorpusError, OutputDirInUseError

__all__ = [
    "ARCHITECTURES",
    "EmptyCorpusError",
    "OutputDirInUseError",
    "architecture_names",
    "pretrain",
]
