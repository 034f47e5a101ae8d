"""The ``shoal`` command line.

`main` is the console script's entry point. It lives here, in a module
that imports nothing heavy, so that a Ctrl-C while the command's modules
(trio, cryptography, the broker) are still being imported ends as every
other Ctrl-C does, ``shoal: interrupted`` and exit 130, not as a traceback.

The import also runs with the garbage collector off. Importing the node
builds some hundred thousand objects (classes, functions, the dataclasses'
generated methods), none of them garbage, and the collector would walk them
again and again on the way: about a tenth of the start-up's CPU time before
``/ping`` answers. Afterwards they are frozen (`gc.freeze`), so the running
node's full collections skip them too.
"""

import gc
import sys

__all__ = ["main"]


def main() -> None:
    """Import the command line and run it."""
    gc.disable()
    try:
        from shoal.cli.main import main as run  # imported under the guard, on purpose
    except KeyboardInterrupt:
        sys.stderr.write("shoal: interrupted\n")
        sys.exit(130)
    finally:
        gc.freeze()
        gc.enable()
    run()
