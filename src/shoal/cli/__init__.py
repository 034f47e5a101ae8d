"""The ``shoal`` command line.

`main` is the console script's entry point. It lives here, in a module
that imports nothing heavy, so that a Ctrl-C while the command's modules
(trio, cryptography, the broker) are still being imported ends as every
other Ctrl-C does, ``shoal: interrupted`` and exit 130, not as a traceback.
"""

import sys

__all__ = ["main"]


def main() -> None:
    """Import the command line and run it."""
    try:
        from shoal.cli.main import main as run  # imported under the guard, on purpose
    except KeyboardInterrupt:
        sys.stderr.write("shoal: interrupted\n")
        sys.exit(130)
    run()
