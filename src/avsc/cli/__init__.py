"""The ``avsc`` command line: one subcommand per stage, each a thin layer over the library.

Each area registers its subcommands from its own module (``register(subparsers)``), and
each subcommand's handler takes the parsed arguments and returns an exit code. Errors a
user can act on (:class:`avsc.errors.AvscError`) print as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from avsc import __version__
from avsc.errors import AvscError

# Modules that add subcommands, in the order a clip flows through the system.
_AREAS = ("dataset", "preprocess", "train", "fusion", "store")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="avsc",
        description="Audio-visual scene classification: demo data, ingest, features, "
                    "five backbones, fusion, evaluation and prediction.",
    )
    parser.add_argument("--version", action="version", version=f"avsc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        module = importlib.import_module(f"avsc.cli.{area}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from avsc.runtime import use_writable_caches

    use_writable_caches()  # numba and matplotlib caches, for any user and a read-only root
    try:
        return int(args.handler(args) or 0)
    except AvscError as exc:
        print(f"avsc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"avsc {args.command}: interrupted; finished work is kept, re-run to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
