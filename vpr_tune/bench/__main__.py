"""``python -m vpr_tune.bench NAME [--json] [--quick]``: same as ``vpr-tune bench``."""

import sys

from vpr_tune.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
