"""The ``avsc`` command line: one subcommand per stage, each a thin layer over the library.

Every command lives in a module of its own, named after it (``avsc demo-data`` in
``demo_data.py``, ``avsc data push|pull|ls`` in ``data.py``), which defines
``register(subparsers)``: it adds its parser with :func:`avsc.cli.options.add_command` and sets
``handler``, a function of the parsed arguments that returns an exit status. A new command
is one new module plus its name in :data:`COMMANDS`.

Building the parser imports no heavy library (no TensorFlow, librosa or pandas): each handler
imports what it needs when it runs, so ``avsc --help`` answers at once.

Exit statuses: 0 success; 1 a data or runtime error (:class:`avsc.errors.AvscError`,
``OSError``, a missing TensorFlow extra); 2 a usage error (argparse, and
:class:`avsc.errors.ConfigError` from flags, ``--set`` or a config file); 130 interrupted;
143 stopped by SIGTERM after saving its work (:class:`avsc.errors.Preempted`).
Errors print as one line, ``avsc COMMAND: error: ...``, never a traceback; an avsc error raised
inside ``tf.data`` (a part read while training or embedding) comes out as itself
(:func:`avsc.training.streams.store_errors`), not as TensorFlow's ``OpError``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator

from avsc import __version__
from avsc.cli import options
from avsc.config import DEFAULT_PRESET
from avsc.errors import AvscError, ConfigError, Preempted

# Modules under avsc.cli that add a command, in the order a clip flows through the system.
COMMANDS: list[str] = [
    "demo_data",
    "ingest",
    "preprocess",
    "train",
    "embed",
    "fuse",
    "evaluate",
    "bundle",
    "predict",
    "inspect",
    "data",
]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The ``avsc`` parser with every command of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="avsc",
        description="Audio-visual scene classification (Pham et al., DCASE 2021 Task 1B): demo "
        "data, ingest, features, five backbones, embeddings, fusion, evaluation and "
        "prediction. Commands that take settings (ingest, preprocess, train, fuse, inspect) start from "
        f"the {DEFAULT_PRESET!r} preset and accept --preset, --config FILE and --set "
        "section.key=value.",
        epilog=options.exit_status_epilog(),
        formatter_class=options.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"avsc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages from the library's log")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"avsc.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``avsc`` command; returns its exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else options.EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return options.EXIT_USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    from avsc.runtime import use_writable_caches

    use_writable_caches()  # numba and matplotlib caches, for any user and a read-only root
    with _library_log(level):
        return _run(handler, args)


def _run(handler, args: argparse.Namespace) -> int:
    where = f"avsc {args.command}"
    try:
        return int(handler(args) or 0)
    except ConfigError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return options.EXIT_USAGE
    except Preempted as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return options.EXIT_TERMINATED
    except AvscError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return options.EXIT_FAILURE
    except ImportError as exc:
        if not options.is_missing_tensorflow(exc):
            raise
        print(f"{where}: error: {options.missing_backend_message()}", file=sys.stderr)
        return options.EXIT_FAILURE
    except BrokenPipeError:  # the reader went away (`avsc predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return options.EXIT_FAILURE
    except OSError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return options.EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{where}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return options.EXIT_INTERRUPTED


@contextlib.contextmanager
def _library_log(level: int) -> Iterator[None]:
    """Show avsc's log on stderr at ``level`` while a command runs, then restore the setup."""
    root, logger = logging.getLogger(), logging.getLogger("avsc")
    handler = None
    if not root.handlers:  # an application that embeds main() keeps its own logging setup
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
        if handler is not None:
            root.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
