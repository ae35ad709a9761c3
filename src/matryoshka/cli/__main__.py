"""``python -m matryoshka.cli``: the command line (how torchrun starts it for DDP training)."""

import sys

from matryoshka.cli import main

sys.exit(main())
