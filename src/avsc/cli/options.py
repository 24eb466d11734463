"""What every ``avsc`` command shares: help layout, exit statuses, settings options, TensorFlow.

Exit statuses (stated in every command's ``--help``):

====  ======================================================================================
0     success
1     a data or runtime error: an input missing or unusable, a step that failed, the object
      store refusing, TensorFlow not installed (:class:`avsc.errors.AvscError` and ``OSError``)
2     a usage error: an unknown option or bad value, a bad ``--set`` or ``--config`` file
      (argparse errors and :class:`avsc.errors.ConfigError`)
130   interrupted (Ctrl-C); finished work is kept and a re-run resumes
====  ======================================================================================

Settings go through one path: :func:`add_settings_options` gives a command ``--preset``
(default :data:`avsc.config.DEFAULT_PRESET`, ``paper``), ``--config FILE`` and ``--set
section.key=value``; :func:`add_shorthand` adds documented shorthands (``--epochs N`` is
``--set train.epochs=N``); :func:`resolve_config` hands all of them to
:func:`avsc.config.load_config` once.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from avsc.config import DEFAULT_PRESET, PRESETS, Config, load_config
from avsc.config.sources import parse_setting
from avsc.errors import AvscError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process ended by it

TENSORFLOW_MISSING = "this command needs TensorFlow: pip install 'avsc[cpu]' or 'avsc[gpu]'"
JAX_MISSING = "this command with KERAS_BACKEND=jax needs JAX: pip install 'avsc[jax]'"
# Top-level modules of the Keras extras (cpu, gpu: TensorFlow; jax); a command that fails to
# import one of them tells the user which extra to install instead of showing a traceback.
TENSORFLOW_MODULES = ("tensorflow", "keras", "jax", "jaxlib")

_EXIT_LINES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "data or runtime error (an input missing or unusable, a step that failed)",
    EXIT_USAGE: "usage error (an unknown option or a bad value)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); finished work is kept, re-run to resume",
    EXIT_TERMINATED: "stopped by SIGTERM (a pod evicted or preempted) after saving its work; re-run to resume",
}


class MissingDependencyError(AvscError):
    """An optional dependency (an extra of the avsc package) is not installed."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs, keeps indented lines (the exit-status table) as written, and
    ends each option's help with its default when the text does not state it already."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                lines.append(indent + line)
            else:
                lines.append(super()._fill_text(line, width, indent))
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.required
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


def exit_status_epilog(**notes: str) -> str:
    """The ``exit status:`` table of a command's help; ``notes`` add what a status means for it.

    Example:
        >>> print(exit_status_epilog(failure="also when some video could not be classified"))
        exit status:
          0    success
          1    data or runtime error ...
               also when some video could not be classified
        ...
    """
    extra = {EXIT_FAILURE: notes.pop("failure", None), EXIT_USAGE: notes.pop("usage", None)}
    if notes:
        raise TypeError(f"unknown exit-status notes: {', '.join(notes)}")
    lines = ["exit status:"]
    for code, meaning in _EXIT_LINES.items():
        lines.append(f"  {code:<4} {meaning}")
        note = extra.get(code)
        if note:
            lines.extend(textwrap.wrap(note, width=72, initial_indent=" " * 7, subsequent_indent=" " * 7))
    return "\n".join(lines)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str,
    needs_tensorflow: bool = False,
    **exit_notes: str,
) -> argparse.ArgumentParser:
    """A subcommand parser with avsc's help layout and its exit-status epilog.

    Args:
        subparsers: from ``parser.add_subparsers()`` (or a command group's own).
        name: the command as typed (``demo-data``).
        help: one line for ``avsc --help``.
        description: what the command does, for ``avsc NAME --help``.
        needs_tensorflow: the command runs Keras models (says so, and which extra to install).
        exit_notes: ``failure=`` / ``usage=``: command-specific meanings of statuses 1 and 2.
    """
    if needs_tensorflow:
        description += (
            " Needs Keras on TensorFlow: install avsc with the cpu or gpu extra "
            "(pip install 'avsc[cpu]'), or on JAX: the jax extra and KERAS_BACKEND=jax."
        )
    parser = subparsers.add_parser(
        name, help=help, description=description, epilog=exit_status_epilog(**exit_notes), formatter_class=HelpFormatter
    )
    parser.exit_notes = dict(exit_notes)  # read again by add_settings_options
    return parser


# ---------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (``--workers``, ``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_quiet(parser: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    """``--quiet``: no progress bar and only warnings from the library's log."""
    parser.add_argument("--quiet", action="store_true", help=f"{what}; only warnings are logged")


# ---------------------------------------------------------------- settings


def add_settings_options(parser: argparse.ArgumentParser, *, sections: str) -> argparse._ArgumentGroup:
    """``--preset``, ``--config FILE`` and ``--set section.key=value`` (repeatable).

    Args:
        parser: the command.
        sections: the settings the command uses, for the help text (``"features"``).

    Returns:
        The "settings" argument group, for the command's shorthand flags.
    """
    notes = dict(getattr(parser, "exit_notes", {}))
    usage = "also a bad --set or --config file (an unknown setting, a value of the wrong type)"
    if notes.get("usage"):
        usage += "; " + notes["usage"].removeprefix("also ")
    parser.epilog = exit_status_epilog(**{**notes, "usage": usage})
    group = parser.add_argument_group(
        "settings",
        f"This command uses the [{sections}] settings. They are resolved once: the preset, then "
        "--config FILE, then the shorthand flags and --set, later ones winning; the result is "
        "recorded with its hash in the outputs.",
    )
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default=DEFAULT_PRESET,
        help="base settings: paper (the paper's settings) or quick (a run that fits a CPU in minutes)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or JSON file with any subset of the settings, nested as "
        "[data], [features.audio], [features.frames], [train], [fusion] "
        "(default: none)",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="one setting, applied last; repeatable; the value is read as TOML "
        '(309, 1e-3, true, "text"), e.g. --set features.audio.frames=309 '
        "(default: none)",
    )
    return group


def add_shorthand(
    group: argparse._ArgumentGroup, flag: str, setting: str, *, type: Any = str, metavar: str = "VALUE", what: str = ""
) -> None:
    """A documented shorthand for ``--set SETTING=VALUE`` (``--epochs 3`` for ``train.epochs``).

    Its value lands in ``args`` under the dotted setting name, which is how
    :func:`resolve_config` finds it.
    """
    prefix = f"{what}; " if what else ""
    group.add_argument(
        flag,
        dest=setting,
        type=type,
        metavar=metavar,
        help=f"{prefix}shorthand for --set {setting}={metavar} (default: the preset's value)",
    )


def resolve_config(args: argparse.Namespace) -> Config:
    """The command's settings: preset, then ``--config``, then shorthands and ``--set``.

    Raises:
        ConfigError: an unknown preset, an unreadable config file, a malformed ``--set``,
            an unknown setting or a value of the wrong type (the message names it).
    """
    overrides = {key: value for key, value in vars(args).items() if "." in key and value is not None}
    for text in args.overrides:
        overrides.update(_dotted(parse_setting(text)))
    return load_config(args.config, preset=args.preset, overrides=overrides)


def _dotted(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- TensorFlow


def require_tensorflow(*, load: bool = False, verbose: bool = False) -> None:
    """Fail in one line, before any work, when Keras or its backend is not installed: TensorFlow
    (the default; the cpu or gpu extra), or JAX when ``KERAS_BACKEND=jax`` (the jax extra).

    Also keeps TensorFlow's C++ start-up chatter out of the terminal: its log level, and with
    ``load`` (unless ``verbose``) TensorFlow imported here with the process's standard error
    pointed at /dev/null for the moment, because the lines its libraries print as they load
    ("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are on
    ...") ignore ``TF_CPP_MIN_LOG_LEVEL``.

    Raises:
        MissingDependencyError: ``keras`` or the backend's package cannot be found.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    jax = _keras_backend() == "jax"
    for name in ("keras", "jax") if jax else ("tensorflow", "keras"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            raise MissingDependencyError(JAX_MISSING if jax else TENSORFLOW_MISSING)
    if jax or not load or verbose or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
    finally:
        os.close(saved)


def _keras_backend() -> str:
    # What Keras will pick, without importing it: KERAS_BACKEND wins over keras.json.
    return os.environ.get("KERAS_BACKEND", "").strip() or "tensorflow"


def missing_backend_message() -> str:
    """The line that says which extra to install for the Keras backend asked for."""
    return JAX_MISSING if _keras_backend() == "jax" else TENSORFLOW_MISSING


def is_missing_tensorflow(exc: BaseException) -> bool:
    """Is ``exc`` the import error of a missing Keras extra (TensorFlow, Keras, JAX)?"""
    name = getattr(exc, "name", None) or ""
    return isinstance(exc, ImportError) and name.partition(".")[0] in TENSORFLOW_MODULES
