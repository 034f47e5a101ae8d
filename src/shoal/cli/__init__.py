"""The ``shoal`` command line.

`main` is the console script's entry point. It lives here, in a module
that imports nothing heavy, so that a Ctrl-C while the command's modules
(trio, cryptography, the broker) are still being imported ends as every
other Ctrl-C does, ``shoal: interrupted`` and exit 130, not as a traceback.

The import also runs with the garbage collector off. Importing the node
builds some hundred thousand objects (classes, functions, the config
dataclasses' generated methods), none of them garbage, and the collector
would walk them again and again on the way: about a tenth of the start-up's
CPU time before ``/ping`` answers. Afterwards they are frozen (`gc.freeze`),
so the running node's full collections skip them too.

For the same reason the node's value types (wire commands and messages,
events, records, statistics) are `msgspec.Struct` classes rather than
dataclasses: a frozen, slotted dataclass compiles five or six methods with
``exec`` and then rebuilds its class for the slots, about half a millisecond
each, which over seventy classes was a sixth of the start-up. A struct class
is built in C in microseconds and its instances are as cheap. Configs stay
dataclasses: their fields carry the command-line options (`shoal.fields`).
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
