"""``python -m scgf.cli`` (and ``torchrun -m scgf.cli``) run the ``scgf`` command."""

import sys

from . import main

sys.exit(main())
