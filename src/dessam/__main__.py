"""`python -m dessam ...` (also what `torchrun -m dessam train ...` runs)."""

import sys

from .commands import main

sys.exit(main())
