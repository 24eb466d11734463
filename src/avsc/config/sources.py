"""Where settings come from besides the presets: a ``.toml`` or ``.json`` file, ``--set``
arguments, and override text or mappings (a pipeline parameter), each read into one nested
dict of the shape of :class:`avsc.config.Config`, and merged in order by
:func:`avsc.config.load_config`, which validates the result.

Example:
    >>> parse_setting("train.epochs=3")
    {'train': {'epochs': 3}}
    >>> parse_overrides({"features.audio.frames": 309, "train.seed": None})
    {'features': {'audio': {'frames': 309}}, 'train': {}}
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avsc.errors import ConfigError

__all__ = ["merge", "parse_setting", "parse_overrides", "read_config_file"]


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, section by section (neither is changed).

    Example:
        >>> merge({"train": {"epochs": 60, "seed": 0}}, {"train": {"epochs": 3}})
        {'train': {'epochs': 3, 'seed': 0}}
    """
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 3}`` -> ``{"train": {"epochs": 3}}``; nested mappings are kept."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, Mapping):
            value = _nest(value)
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is a setting, not a section")
        nested = isinstance(node.get(leaf), dict) and isinstance(value, dict)
        node[leaf] = merge(node[leaf], value) if nested else value
    return out


def parse_setting(text: str) -> dict[str, Any]:
    """One ``--set`` argument, ``section.key=value``, as a nested dict.

    The value is read as a TOML value (``309`` an integer, ``1e-3`` a float, ``true`` a
    boolean, ``"a b"`` a string); anything that is not valid TOML is taken as a plain string
    (``--set train.weights=imagenet``).

    Raises:
        ConfigError: no ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. features.audio.frames=309")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return _nest({key: value})


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | str | None) -> dict[str, Any]:
    """Settings to apply last, in any of the forms a user can give them, as one nested dict.

    Args:
        overrides: a mapping (nested, or with dotted keys such as ``"train.epochs"``); a
            sequence of ``section.key=value`` strings (``--set``); TOML text (a pipeline
            parameter, e.g. ``"[train]\nepochs = 3"`` or ``"train.epochs = 3"``); JSON text of
            a mapping; or None. ``None`` values in a mapping are dropped, so unset flags can
            be passed straight through.

    Raises:
        ConfigError: text that is neither TOML nor JSON of a table, a malformed ``--set``.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        text = overrides.strip()
        if not text:
            return {}
        try:
            loaded = json.loads(text) if text.startswith("{") else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config overrides are neither a TOML table nor a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config overrides must be a table of settings, got {loaded!r}")
        return _nest(loaded)
    if isinstance(overrides, Mapping):
        return _drop_none(_nest(overrides))
    merged: dict[str, Any] = {}
    for item in overrides:
        merged = merge(merged, parse_setting(item))
    return merged


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = _drop_none(value)  # kept even when empty, so unknown keys are still caught
        elif value is not None:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a ``.toml`` or ``.json`` file, as a nested dict (not yet validated).

    Raises:
        ConfigError: the file cannot be read or parsed (naming the file).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: must hold a table of settings")
    return _nest(loaded)
