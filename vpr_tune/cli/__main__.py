"""``python -m vpr_tune.cli`` is the same as the ``vpr-tune`` command."""

import sys

from vpr_tune.cli import main

sys.exit(main())
