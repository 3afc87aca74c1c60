"""``python -m WeakSegLib ...`` is the ``weakseg`` command."""

import sys

from WeakSegLib.cli import main

if __name__ == "__main__":
    sys.exit(main())
