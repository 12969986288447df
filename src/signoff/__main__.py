"""``python -m signoff …``: the ``signoff`` command."""

import sys

from signoff.cli import main

sys.exit(main())
