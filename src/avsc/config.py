"""All of avsc's settings, in one place.

Frozen dataclasses whose defaults reproduce the paper (preset ``paper``); preset ``quick``
shrinks everything so the whole system trains on a CPU in minutes. A config loads from a
JSON or TOML file or from flags, rejects unknown keys, and is recorded with its hash in
every output so a result can always be traced to the settings that made it.

Example:
    >>> cfg = load_config(preset="quick", overrides={"train": {"epochs": 3}})
    >>> cfg.train.epochs, config_hash(cfg.features)
    (3, '...')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsc.errors import ConfigError

BACKBONES: tuple[str, ...] = ("aud-mel", "aud-gam", "aud-cqt", "vis-inc", "vis-conv")
AUDIO_BACKBONES: tuple[str, ...] = ("aud-mel", "aud-gam", "aud-cqt")
VISUAL_BACKBONES: tuple[str, ...] = ("vis-inc", "vis-conv")
# Which stored feature each backbone reads.
BACKBONE_FEATURE: dict[str, str] = {
    "aud-mel": "mel",
    "aud-gam": "gam",
    "aud-cqt": "cqt",
    "vis-inc": "frames",
    "vis-conv": "frames",
}
FUSION_METHODS: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5", "f6")
MODALITY_SETS: dict[str, tuple[str, ...]] = {
    "audio+visual": BACKBONES,
    "audio": AUDIO_BACKBONES,
    "visual": VISUAL_BACKBONES,
}
PRESETS: tuple[str, ...] = ("paper", "quick")


@dataclass(frozen=True)
class AudioConfig:
    """How a clip's audio becomes spectrograms (paper, section II-A).

    The paper states 32 kHz, 128 bins, 80 ms windows and 14 ms hops; at those
    parameters a 10-s clip gives 715 frames, not the 128x309 the paper quotes.
    ``frames`` optionally resamples the time axis to a fixed count (e.g. 309).
    """

    sample_rate: int = 32000
    channels: int = 2
    clip_seconds: float = 10.0
    n_bins: int = 128
    window_ms: float = 80.0
    hop_ms: float = 14.0
    fmin: float = 20.0
    cqt_fmin: float = 32.70
    cqt_bins_per_octave: int = 15
    gammatone_fmin: float = 50.0
    frames: int | None = None
    log_floor: float = 1e-10

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000.0))


@dataclass(frozen=True)
class FrameConfig:
    """How a clip's video becomes images: ``fps`` frames a second, ``size`` x ``size`` RGB."""

    fps: float = 2.0
    size: int = 224


@dataclass(frozen=True)
class FeatureConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Phase I training of one backbone: mixup, KL-divergence + L2 (eq. 4), Adam."""

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-4
    mixup_alpha: float = 0.4
    l2: float = 1e-4
    image_size: int = 224
    weights: str = "imagenet"
    # Residual-inception audio network: filters of the first stage; later stages double.
    audio_base_filters: int = 64
    audio_stages: int = 4
    dense_units: int = 1024
    dropout: float = 0.2
    frames_per_clip: int | None = None  # None: every stored frame
    mixed_precision: str = "auto"  # "auto" (on when a GPU is present), "on", "off"
    seed: int = 0


@dataclass(frozen=True)
class FusionConfig:
    """Phase II: fusion layer + FC(10) softmax on frozen embeddings (eqs. 1-3)."""

    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    mixup_alpha: float = 0.4
    l2: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


_PRESET_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        "features": {
            "audio": {"clip_seconds": 4.0},
            "frames": {"fps": 2.0, "size": 96},
        },
        "train": {
            "epochs": 6,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "image_size": 75,
            "weights": "none",
            "audio_base_filters": 8,
            "audio_stages": 3,
            "dense_units": 1024,
            "frames_per_clip": 2,
        },
        "fusion": {"epochs": 40, "batch_size": 32, "learning_rate": 1e-2},
    },
}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Short, stable hash of a config (or any of its parts): first 12 hex digits of SHA-256."""
    payload = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, key)
        else:
            kwargs[name] = _coerce(value, annotation, key)
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_dict(preset: str) -> dict[str, Any]:
    if preset not in _PRESET_OVERRIDES:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _merge(to_dict(Config()), _PRESET_OVERRIDES[preset])


def load_config(
    path: str | Path | None = None,
    *,
    preset: str = "paper",
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Settings from a preset, then a JSON/TOML file, then explicit overrides (flags).

    Args:
        path: optional ``.json`` or ``.toml`` file holding any subset of the settings,
            nested as ``features.audio``, ``features.frames``, ``train``, ``fusion``.
        preset: ``paper`` (the paper's settings) or ``quick`` (a CPU-sized run).
        overrides: nested dict applied last; ``None`` values are ignored so unset
            flags can be passed straight through.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or wrong type.
    """
    data = preset_dict(preset)
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
        try:
            loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
        _build(Config, _merge(to_dict(Config()), loaded), where)  # name the file in errors
        data = _merge(data, loaded)
    if overrides:
        data = _merge(data, _drop_none(overrides))
    return _build(Config, data, "" if where == "config" else where)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = _drop_none(value)  # kept even when empty, so unknown keys are still caught
        elif value is not None:
            out[key] = value
    return out


def feature_config_from_dict(data: dict[str, Any]) -> FeatureConfig:
    """Rebuild the :class:`FeatureConfig` recorded in a feature store or bundle."""
    return _build(FeatureConfig, data, "features")
