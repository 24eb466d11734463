"""CLI subcommands of this area (filled in by the stage that owns it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler` to a function(args) -> exit code."""
