"""`python -m dessam ...` (also what `torchrun -m dessam train ...` runs)."""

import sys

from .cli import main

sys.exit(main())
