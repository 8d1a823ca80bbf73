"""The ``anyseg`` command line.

Each sub-command lives in its own module that exposes ``register(subparsers)``; the
module adds its parser and sets ``func`` to a handler taking the parsed arguments and
returning an exit code. Errors anyseg raises on purpose (:class:`AnysegError`) and those of
the file system (``OSError``: no rights, no space) are printed as one clear line, never as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from anyseg.errors import AnysegError

# Sub-command modules, in the order ``anyseg --help`` lists them.
COMMANDS = [
    "anyseg.cli.segment",
    "anyseg.cli.everything",
    "anyseg.cli.track",
    "anyseg.cli.models",
    "anyseg.cli.eval",
    "anyseg.cli.bench",
    "anyseg.cli.serve",
    "anyseg.cli.warmup",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anyseg", description="Segment anything in images and videos."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AnysegError as exc:
        print(f"anyseg: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the files and folders around it: rights, space, a path gone
        print(f"anyseg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anyseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
