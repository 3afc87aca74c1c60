"""The ``weakseg`` command (also ``python -m WeakSegLib``): one sub-command per file of this package.

Errors are one readable line on stderr and a non-zero exit code (``--debug`` shows the traceback);
nothing is overwritten unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from WeakSegLib.cli import bench, demo, evaluate, predict, simulate, train, worker

    parser = argparse.ArgumentParser(
        prog="weakseg",
        description="WeakSeg: train a segmentation CNN from weak annotations (scribbles, points, boxes, tags, "
                    "size ranges, partial labels) and segment new volumes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (demo, train, predict, simulate, evaluate, bench, worker):
        command.add_parser(sub)
    return parser


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
        print("weakseg: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"weakseg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
