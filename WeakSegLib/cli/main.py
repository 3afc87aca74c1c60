"""The ``weakseg`` command (also ``python -m WeakSegLib``): one sub-command per file of this package.

Errors are one readable line on stderr and a non-zero exit code, whatever their type (``--debug``
shows the traceback); nothing is overwritten unless ``--overwrite`` is given, and every output path
is checked before any work.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_MESSAGE = 700       # characters of one error line

# Errors that describe bad input or a failed operation in words meant for the user; anything else is a
# defect of WeakSeg and says so (still in one line).
USER_ERRORS = (ValueError, OSError, RuntimeError, KeyError, LookupError)


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line: ``weakseg train: error: ... (see weakseg train --help)``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help').\n")


def build_parser() -> argparse.ArgumentParser:
    from WeakSegLib.cli import bench, calibrate, demo, evaluate, predict, simulate, train, worker

    parser = OneLineParser(
        prog="weakseg",
        description="WeakSeg: train a segmentation CNN from weak annotations (scribbles, points, boxes, tags, "
                    "size ranges, partial labels) and segment new volumes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for command in (demo, train, predict, calibrate, simulate, evaluate, bench, worker):
        p = command.add_parser(sub)
        # Also after the command (``weakseg train ... --debug``); SUPPRESS keeps the global flag's value.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    return parser


def error_line(exc: BaseException) -> str:
    """The one line that describes ``exc`` to the user."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc)
    text = re.sub(r"\s+", " ", text).strip()
    if isinstance(exc, MemoryError):
        return "out of memory: use fewer or smaller cases, a smaller patch_size or batch_size, or another device"
    if not isinstance(exc, USER_ERRORS):
        text = (f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
                + " (a defect of WeakSeg: please report it with the output of --debug)")
    elif not text:
        text = type(exc).__name__
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 40].rstrip() + " ... (--debug shows the whole message)"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if args.command != "worker"
                        else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"weakseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (the traceback with --debug)
        if args.debug:
            raise
        print(f"weakseg {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
