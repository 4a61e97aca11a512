"""``python -m localaws serve [--port N] [--state-file PATH]``: local AWS in the foreground."""

from __future__ import annotations

import sys

from localaws.serve import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0] != "serve":
        sys.stderr.write("usage: python -m localaws serve [--port N] [--state-file PATH]\n")
        sys.exit(2)
    sys.exit(main(argv[1:]))
