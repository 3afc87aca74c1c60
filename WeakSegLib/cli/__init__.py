"""The ``weakseg`` command line: ``main`` and one module per sub-command (demo, train, predict, simulate,
evaluate, bench, worker)."""

from WeakSegLib.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
