"""The base of every record: a frozen dataclass written as one versioned JSON file.

A record's JSON object carries its ``format`` (e.g. ``"avsc-model-info"``) and ``version``
beside its fields. Reading is strict: another format, a newer or older version, a missing or
an unknown field is a :class:`RecordError` naming the file, never a silent default.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from avsc.errors import DataError
from avsc.storage import locations

__all__ = ["Record", "RecordError"]

R = TypeVar("R", bound="Record")


class RecordError(DataError):
    """A record file is missing, not valid JSON, of another format or version, or malformed."""


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses and mappings as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _decode(hint: Any, value: Any, where: str) -> Any:
    """``value`` (plain JSON data) as the type ``hint`` names: nested dataclasses are built
    strictly (every field known), ``X | None`` and tuples are followed; other values pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(options[0], value, where) if len(options) == 1 else value
    if origin in (Mapping, dict, typing.Mapping) or origin is collections.abc.Mapping:
        args = typing.get_args(hint)
        inner = args[1] if len(args) == 2 else Any
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: a JSON object expected, got {type(value).__name__}")
        return {k: _decode(inner, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_decode(inner, v, where) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a JSON object expected, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    return cls(**{name: _decode(hints[name], data[name], f"{where}.{name}") for name in data})


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the files handed between stages (subclasses are frozen dataclasses).

    Class attributes of a subclass:
        FILE_NAME: the file's name in its folder (``config.json``).
        FORMAT: the ``format`` string written into it.
        VERSION: the format version this avsc writes and reads; any other is refused.
        WRITTEN_BY: the command that writes it, for the hint of an error.
    """

    FILE_NAME: ClassVar[str] = ""
    FORMAT: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc"

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, ``format`` and ``version`` first."""
        return {"format": self.FORMAT, "version": self.VERSION, **_plain(self)}

    @classmethod
    def from_dict(cls: type[R], data: Any, *, source: str | os.PathLike[str] = "<record>") -> R:
        """The record in ``data`` (as :meth:`to_dict` writes it).

        Raises:
            RecordError: another format, another version, a missing or unknown field, or a
                value of the wrong kind; the message names ``source``.
        """
        hint = f"write it anew with `{cls.WRITTEN_BY}`"
        if not isinstance(data, Mapping):
            raise RecordError(source, f"not a {cls.FORMAT} record (a JSON object expected)", hint)
        fmt, version = data.get("format"), data.get("version")
        if fmt != cls.FORMAT:
            found = "no format field" if fmt is None else f"format {fmt!r}"
            raise RecordError(source, f"not a {cls.FORMAT} record ({found}; an older avsc or another file)", hint)
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordError(source, f"{cls.FORMAT} record without an integer version", hint)
        if version > cls.VERSION:
            raise RecordError(
                source, f"{cls.FORMAT} version {version} is newer than this avsc reads ({cls.VERSION})", "upgrade avsc"
            )
        if version < cls.VERSION:
            raise RecordError(
                source, f"{cls.FORMAT} version {version} is older than this avsc reads ({cls.VERSION})", hint
            )
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            record: R = _build(cls, body, cls.FORMAT)
        except (TypeError, ValueError) as exc:
            raise RecordError(source, f"malformed {cls.FORMAT} record ({exc})", hint) from None
        return record

    @classmethod
    def path_in(cls, folder: str | os.PathLike[str]) -> str:
        """Where the record lives in ``folder`` (a local folder or ``s3://`` prefix)."""
        return locations.join(str(folder), cls.FILE_NAME)

    def write(self, folder: str | os.PathLike[str]) -> str:
        """Write the record into ``folder`` atomically; returns the file's location."""
        path = self.path_in(folder)
        locations.write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls: type[R], folder: str | os.PathLike[str]) -> R:
        """The record in ``folder`` (a local folder or ``s3://`` prefix).

        Raises:
            RecordError: not there, not JSON, or not a record of this format and version.
            StoreError: the object store refused or could not be reached.
        """
        return cls.read_file(cls.path_in(folder))

    @classmethod
    def read_file(cls: type[R], path: str | os.PathLike[str]) -> R:
        """The record in the file ``path`` (any name; see :meth:`read`)."""
        try:
            data = locations.read_json(path)
        except FileNotFoundError:
            raise RecordError(path, "not found", f"write it with `{cls.WRITTEN_BY}`") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordError(path, f"not valid JSON ({exc})", f"write it anew with `{cls.WRITTEN_BY}`") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def exists_in(cls, folder: str | os.PathLike[str]) -> bool:
        """Whether ``folder`` holds this record's file (it may still be unreadable)."""
        return locations.exists(cls.path_in(folder))
