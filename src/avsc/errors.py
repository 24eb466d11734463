"""Errors that reach a user: each names the file and the problem, and says what to do."""

from __future__ import annotations

import os


class AvscError(Exception):
    """Base class for problems a user can act on; the CLI prints these without a traceback."""


class ConfigError(AvscError):
    """A configuration file or flag is invalid (unknown key, wrong type, bad value)."""


class DataError(AvscError):
    """A dataset, media or feature file is unusable.

    Args:
        path: the file (or folder) at fault.
        problem: what is wrong with it, in a few words.
        hint: what the user can do about it (optional).
    """

    def __init__(self, path: str | os.PathLike[str], problem: str, hint: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        message = f"{self.path}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class MediaError(DataError):
    """A video or audio file cannot be decoded as needed (corrupt, no audio track, too short)."""


class StoreError(AvscError):
    """The object store refused or could not be reached (credentials, bucket, network)."""


class Preempted(AvscError):
    """A step stopped on SIGTERM (an evicted or preempted pod) after saving its work; running
    it again resumes."""


class ResourceError(AvscError):
    """This machine (or pod) lacks what a step needs, e.g. the memory to train a backbone."""
