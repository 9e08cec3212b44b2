"""`python -m tnconv`: the `tnconv` command (see `tnconv.cli`)."""

import sys

from tnconv.cli import main

if __name__ == "__main__":
    sys.exit(main())
