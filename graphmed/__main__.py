"""``python -m graphmed``: the ``graphmed`` command, e.g. under ``torchrun -m graphmed train``."""

import sys

from .cli import main

sys.exit(main())
