"""All of avsc's settings, in one place.

Frozen dataclasses whose defaults reproduce the paper (preset ``paper``); preset ``quick``
shrinks everything so the whole system trains on a CPU in minutes. A config loads from a
JSON or TOML file or from flags, rejects unknown keys, and is recorded with its hash in
every output so a result can always be traced to the settings that made it. Files, ``--set``
arguments and override text are read by :mod:`avsc.config.sources`.

Example:
    >>> cfg = load_config(preset="quick", overrides={"train": {"epochs": 3}})
    >>> cfg.train.epochs, len(config_hash(cfg.features))
    (3, 12)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avsc.config.sources import merge, parse_overrides, read_config_file
from avsc.errors import ConfigError

# Read by pydantic when it validates these dataclasses: unknown keys are errors, and values
# are taken as typed (TOML and JSON give typed values), never coerced from other types.
_VALIDATION = {"extra": "forbid", "strict": True}

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
# How a model is chosen on the val split (an epoch of a backbone or of a fusion model, and
# the best fusion model): DCASE's primary metric, log loss (after temperature scaling), or
# accuracy; see avsc.scoring.calibration.SELECTION_RULES.
Selection = Literal["log_loss", "accuracy"]
Stream = Literal["auto", "tfdata", "numpy"]
# Where a clip's sound comes from (DataConfig.audio_source).
AudioSource = Literal["auto", "wav", "video"]
# The preset every entry point (library, CLI, pipeline) starts from unless told otherwise.
DEFAULT_PRESET = "paper"


@dataclass(frozen=True)
class AudioConfig:
    """How a clip's audio becomes spectrograms (paper, section II-A).

    The paper states 32 kHz, 128 bins, 80 ms windows and 14 ms hops; at those
    parameters a 10-s clip gives 715 frames, not the 128x309 the paper quotes.
    ``frames`` optionally resamples the time axis to a fixed count (e.g. 309).
    """

    __pydantic_config__ = _VALIDATION

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
    """How a clip's video becomes images: ``fps`` frames a second, ``size`` x ``size`` RGB.

    ``encoding`` is how the feature store keeps them: ``jpeg`` (at ``jpeg_quality``, no chroma
    subsampling; about 7x smaller, PSNR about 36 dB at 90) or ``raw`` (the uint8 pixels).
    """

    __pydantic_config__ = _VALIDATION

    fps: float = 2.0
    size: int = 224
    encoding: str = "jpeg"
    jpeg_quality: int = 90


@dataclass(frozen=True)
class FeatureConfig:
    __pydantic_config__ = _VALIDATION

    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Phase I training of one backbone: mixup, KL-divergence + L2 (eq. 4), Adam."""

    __pydantic_config__ = _VALIDATION

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-4
    mixup_alpha: float = 0.4
    l2: float = 1e-4
    image_size: int = 224
    weights: str = "imagenet"
    # Residual-inception audio network: filters of the first stage; later stages double.
    audio_base_filters: int = 76
    audio_stages: int = 4
    dense_units: int = 1024
    dropout: float = 0.2
    frames_per_clip: int | None = None  # None: every stored frame
    mixed_precision: str = "auto"  # "auto" (on when a GPU is present), "on", "off"
    selection: Selection = "log_loss"  # the epoch kept: lowest val log loss, or best val accuracy
    seed: int = 0
    # The input stream: "tfdata", "numpy" (no TensorFlow needed), or "auto" (tf.data on Keras'
    # TensorFlow backend, NumPy on the others). Both give the same batches for a seed.
    stream: Stream = "auto"


@dataclass(frozen=True)
class FusionConfig:
    """Phase II: fusion layer + FC(10) softmax on frozen embeddings (eqs. 1-3)."""

    __pydantic_config__ = _VALIDATION

    # Training runs until the val selection log loss has not improved for `patience` optimizer
    # steps, or `max_steps` steps were taken, or (when set) `epochs` passes over train: counted
    # in steps, the same settings converge on 60 training clips and on 8,646.
    max_steps: int = 4000
    patience: int = 400
    # Optimizer steps between two val evaluations (rounded to whole passes over train).
    eval_every: int = 20
    epochs: int | None = None
    batch_size: int = 64
    # Inputs are standardised with train-split statistics (stored in the model); Adam step
    # sizes measured on standardised FC(10) (f4-f6) and FC(1024) (f1-f3) embeddings.
    learning_rate: float = 1e-2
    # Step size of the FC(1024) fusions f1-f3 (None: learning_rate). Their 1024-wide inputs
    # move the logits far more per Adam step than the FC(10) inputs of f4-f6 do.
    learning_rate_fc1024: float | None = 1e-3
    mixup_alpha: float = 0.4
    l2: float = 1e-2
    # L2 of the FC(1024) fusions f1-f3 (None: l2).
    l2_fc1024: float | None = None
    # The epoch kept and the best model of an evaluation: lowest val log loss, or best val accuracy.
    selection: Selection = "log_loss"
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """How a dataset becomes manifest rows (``avsc ingest``, the pipeline's ingest step).

    ``segment_seconds``: cut every clip into segments of this many seconds after the
    train/val/test split (:mod:`avsc.data.segments`; 1 = the DCASE 2021 Task 1B protocol);
    None keeps whole clips, as the paper does. A segment is the clip every later stage sees,
    so ``features.audio.clip_seconds`` must equal it (preprocessing refuses another length;
    the pipeline checks both when it resolves its settings).

    ``audio_source``: where a clip's sound comes from. ``wav``: the dataset's own audio file
    (TAU 2021's ``audio/*.wav``, the binaural 48 kHz / 24-bit recordings the task defines;
    a clip without one is rejected); ``video``: the video's own audio track (a video
    without one is rejected); ``auto`` (default): the WAV when the list names one and it
    exists, else the video's track. Recorded per clip in the manifest (``audio_source``).
    """

    __pydantic_config__ = _VALIDATION

    segment_seconds: float | None = None
    audio_source: AudioSource = "auto"


@dataclass(frozen=True)
class Config:
    __pydantic_config__ = _VALIDATION

    data: DataConfig = field(default_factory=DataConfig)
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
        "fusion": {"batch_size": 32},
    },
}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Short, stable hash of a config (or any of its parts): first 12 hex digits of SHA-256."""
    payload = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _validate(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build ``cls`` from nested dicts with pydantic; errors name the setting (and ``where``)."""
    import pydantic

    try:
        # As JSON: strict mode then accepts a table for a section (a Python dict would have
        # to be a dataclass instance already) and still refuses "ten" or true for a number.
        return pydantic.TypeAdapter(cls).validate_json(json.dumps(data, default=str))
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                parent, _, name = loc.rpartition(".")
                section = _section(cls, parent)
                known = ", ".join(f.name for f in dataclasses.fields(section)) if section else ""
                problems.append(f"{parent or 'config'}: unknown setting(s) {name}; known: {known}")
            else:
                problems.append(f"{loc}: {error['msg'].lower()} (got {error['input']!r})")
        prefix = f"{where}: " if where else ""
        raise ConfigError(prefix + "; ".join(problems)) from None


def _section(cls: type, dotted: str) -> type | None:
    """The dataclass type at ``dotted`` below ``cls`` (``""`` is ``cls`` itself)."""
    for part in filter(None, dotted.split(".")):
        hints = typing.get_type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return None
        cls = hints[part]
    return cls


def preset_dict(preset: str) -> dict[str, Any]:
    """The full settings of a preset as a nested dict."""
    if preset not in _PRESET_OVERRIDES:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return merge(to_dict(Config()), _PRESET_OVERRIDES[preset])


def load_config(
    path: str | Path | None = None,
    *,
    preset: str = DEFAULT_PRESET,
    overrides: Mapping[str, Any] | Sequence[str] | str | None = None,
) -> Config:
    """The one way settings are resolved: a preset, then a file, then overrides.

    Every CLI command (``--preset``, ``--config FILE``, ``--set section.key=value``) and the
    pipeline (its ``preset`` and ``config`` parameters, resolved once by its first step)
    call this, so any setting a CLI user can change a pipeline user can change too.

    Args:
        path: optional ``.toml`` or ``.json`` file holding any subset of the settings,
            nested as ``data``, ``features.audio``, ``features.frames``, ``train``, ``fusion``.
        preset: ``paper`` (the paper's settings, the default) or ``quick`` (a CPU-sized run).
        overrides: applied last; see :func:`parse_overrides` for the accepted forms.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or wrong type (the message
            names the setting, and the file when the file is at fault).

    Example:
        >>> cfg = load_config(preset="quick", overrides=["features.audio.frames=309"])
        >>> cfg.features.audio.frames
        309
    """
    data = preset_dict(preset)
    if path is not None:
        loaded = read_config_file(path)
        _validate(Config, merge(to_dict(Config()), loaded), str(path))  # name the file in errors
        data = merge(data, loaded)
    data = merge(data, parse_overrides(overrides))
    return _validate(Config, data, "")


def feature_config_from_dict(data: dict[str, Any]) -> FeatureConfig:
    """Rebuild the :class:`FeatureConfig` recorded in a feature store or bundle."""
    return _validate(FeatureConfig, data, "features")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a full :class:`Config` recorded by :func:`to_dict` (e.g. a pipeline's config artifact)."""
    return _validate(Config, data, "config")
