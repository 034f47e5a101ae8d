"""Runs the ``shoal`` command line as ``python -m shoal``."""

from shoal.cli.main import main

main()
