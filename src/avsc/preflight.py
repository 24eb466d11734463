"""Will a run fit in this machine's memory? Each step's peak resident memory, estimated from
the settings, checked before anything starts.

A step that needs more memory than the machine (or pod) has is ended by the kernel with
SIGKILL after minutes of work: the user sees ``Killed``. The estimates here let a local run
(``pipeline.py run --local``) and ``avsc train`` refuse at once, with one line naming the step,
what it needs and what to do.

The estimates are a model fitted to measured peaks (docs/training.md, "Memory"): a training
step holds TensorFlow and the libraries (:data:`RUNTIME_BYTES`), the weights with their
gradients and Adam's two moments (16 bytes a parameter), the activations of a batch (linear
in the batch size and in the input's size; for the audio network also in its width) and the
training stream's shuffle buffer. They are meant to be within ~25 % of a measured peak: enough
to tell a run that fits from one that cannot, not to plan a node's memory to the megabyte.
"""

from __future__ import annotations

from dataclasses import dataclass

from avsc.config import AUDIO_BACKBONES, BACKBONES, Config
from avsc.errors import ResourceError

GB = 1e9
# Python, TensorFlow and the libraries of a training or embedding process, before any model.
RUNTIME_BYTES = 1.41e9
# Weights, gradients and Adam's two moments: 4 float32 values a parameter.
TRAIN_BYTES_PER_PARAM = 16
# Activations kept for the backward pass, bytes per sample per input value (per unit of the
# first stage's width, for the audio network); fitted to peaks measured at batch 8 and 32.
AUDIO_ACTIVATION_BYTES = 21.5
VISUAL_ACTIVATION_BYTES = {"vis-inc": 1388.0, "vis-conv": 5200.0}
# Parameters of the no-top ImageNet networks (Keras) under the dense block.
VISUAL_PARAMS = {"vis-inc": 21.8e6, "vis-conv": 27.8e6}
VISUAL_FEATURES = {"vis-inc": 2048, "vis-conv": 768}
# The residual-inception audio network: parameters per filter^2 per stage weight (fitted to
# 12.13 M at 76 filters, 4 stages).
AUDIO_PARAMS_PER_UNIT = 24.7
# The training stream's shuffle buffer (avsc.training.streams.train_dataset) and a stored
# JPEG frame's size relative to its pixels (about 7x smaller).
SHUFFLE_BUFFER = 2048
JPEG_RATIO = 1 / 7
# Steps that hold no model: measured peaks of the quick and paper presets.
PREPROCESS_BYTES_PER_SECOND = 0.06e9  # per second of clip (decoded audio at 48 kHz, 3 spectrograms)
PREPROCESS_BASE = 0.5e9
SMALL_STEP_BYTES = {"ingest": 0.4e9, "fuse": 1.0e9, "evaluate": 1.2e9, "publish": 0.3e9}
# An embedding step holds the model without gradients or optimizer state, but reads whole
# splits: in the quick run it peaked about where its training did (1.3-1.6 GB against 1.5-2.5 GB).
EMBED_SHARE = 1.0
# kfp.local's own process, beside the steps it runs.
ORCHESTRATOR_BYTES = 0.3e9
# Of the machine's memory, what the steps may count on: the system, the page cache and the
# estimates' own error take the rest.
USABLE_SHARE = 0.9


def _audio_params(config: Config) -> float:
    train = config.train
    stage_weight = (4**train.audio_stages - 1) / 3
    last_width = train.audio_base_filters * 2 ** (train.audio_stages - 1)
    return (
        AUDIO_PARAMS_PER_UNIT * train.audio_base_filters**2 * stage_weight
        + last_width * train.dense_units
        + train.dense_units * 10
    )


def _audio_input(config: Config) -> int:
    audio = config.features.audio
    frames = audio.frames or 1 + audio.n_samples // audio.hop_length
    return audio.n_bins * frames * audio.channels


def training_bytes(backbone: str, config: Config) -> int:
    """Estimated peak resident memory (bytes) of training ``backbone`` with ``config`` on a CPU.

    Raises:
        ValueError: an unknown backbone.
    """
    train = config.train
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}")
    if backbone in AUDIO_BACKBONES:
        values = _audio_input(config)
        params = _audio_params(config)
        activations = AUDIO_ACTIVATION_BYTES * values * train.audio_base_filters * train.batch_size
        stream: float = SHUFFLE_BUFFER * values * 2  # float16 spectrograms
    else:
        params = VISUAL_PARAMS[backbone] + VISUAL_FEATURES[backbone] * train.dense_units + train.dense_units * 10
        activations = VISUAL_ACTIVATION_BYTES[backbone] * train.image_size**2 * train.batch_size
        size = config.features.frames.size
        stream = SHUFFLE_BUFFER * size * size * 3 * JPEG_RATIO
    return int(RUNTIME_BYTES + TRAIN_BYTES_PER_PARAM * params + activations + stream)


def preprocess_bytes(config: Config) -> int:
    """Estimated peak of one preprocessing worker (bytes): one clip decoded and transformed."""
    return int(PREPROCESS_BASE + PREPROCESS_BYTES_PER_SECOND * config.features.audio.clip_seconds)


@dataclass(frozen=True)
class StepNeed:
    """One step's estimated peak: ``step`` (``train``, ``embed``, ``preprocess``, ...), the
    ``item`` it works on (a backbone, or ``""``), and ``bytes``."""

    step: str
    item: str
    bytes: int


def step_needs(config: Config) -> list[StepNeed]:
    """Every step's estimated peak memory at ``config``, one per backbone for training and
    embedding."""
    needs = [StepNeed("preprocess", "", preprocess_bytes(config))]
    for backbone in BACKBONES:
        train = training_bytes(backbone, config)
        needs += [StepNeed("train", backbone, train), StepNeed("embed", backbone, int(EMBED_SHARE * train))]
    needs += [StepNeed(step, "", int(value)) for step, value in SMALL_STEP_BYTES.items()]
    return needs


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB"


def check_local_run(
    config: Config, *, parallel_trainings: int = 2, preprocess_parallel: int = 2, limit: int | None = None
) -> int:
    """Refuse a local run whose steps cannot fit in :data:`USABLE_SHARE` of ``limit`` (default:
    this machine's memory, :func:`avsc.runtime.memory_limit`).

    Steps run one after another except the loops: two preprocessing shards at a time and
    ``parallel_trainings`` backbones (each trained, then embedded) at a time, so the largest
    need is the sum of the ``parallel_trainings`` largest trainings.

    Returns:
        The largest estimated need (bytes), when it fits (or the limit is unknown).

    Raises:
        ResourceError: one line: the step, what it needs, what this machine has, and the fix
            (``--preset quick``, ``--parallel 1``, a smaller ``train.batch_size``).
    """
    from avsc.runtime import memory_limit

    limit = memory_limit() if limit is None else limit
    needs = step_needs(config)
    trainings = sorted(((n.bytes, n.item) for n in needs if n.step == "train"), reverse=True)
    together = trainings[: max(1, parallel_trainings)]
    training = sum(b for b, _ in together) + ORCHESTRATOR_BYTES
    preprocess = preprocess_parallel * next(n.bytes for n in needs if n.step == "preprocess") + ORCHESTRATOR_BYTES
    largest = max(training, preprocess)
    if limit is None or largest <= USABLE_SHARE * limit:
        return int(largest)
    usable = USABLE_SHARE * limit
    has = f"this machine has {_gb(limit)} ({_gb(usable)} usable)"
    if training >= preprocess:
        names = " and ".join(f"{name} (~{_gb(b)})" for b, name in together)
        alone = trainings[0][0] + ORCHESTRATOR_BYTES
        fixes = ["--preset quick"]
        if len(together) > 1 and alone <= usable:
            fixes.append(f"--parallel 1 (~{_gb(alone)})")
        fixes.append(f"--set train.batch_size={max(1, config.train.batch_size // 4)}")
        raise ResourceError(
            f"not enough memory for step 'Train backbone': {len(together)} at once, {names}, need "
            f"~{_gb(training)}; {has}. Run with {' or '.join(fixes)}"
        )
    raise ResourceError(
        f"not enough memory for step 'Preprocess shard': {preprocess_parallel} at once need "
        f"~{_gb(preprocess)}; {has}. Run with --preset quick"
    )


def check_training(backbone: str, config: Config, *, limit: int | None = None) -> int:
    """Refuse to train ``backbone`` at ``config`` when its estimated peak exceeds
    :data:`USABLE_SHARE` of ``limit`` (default: this machine's memory).

    Returns:
        The estimated need (bytes), when it fits (or the limit is unknown).

    Raises:
        ResourceError: one line naming the backbone, the need, the memory and the fix.
    """
    from avsc.runtime import memory_limit

    limit = memory_limit() if limit is None else limit
    need = training_bytes(backbone, config)
    if limit is not None and need > USABLE_SHARE * limit:
        raise ResourceError(
            f"not enough memory to train {backbone}: needs ~{_gb(need)} at batch size "
            f"{config.train.batch_size}; this machine has {_gb(limit)} ({_gb(USABLE_SHARE * limit)} "
            "usable). Use --preset quick or a "
            f"smaller --batch-size (e.g. {max(1, config.train.batch_size // 4)})"
        )
    return need


__all__ = ["StepNeed", "check_local_run", "check_training", "preprocess_bytes", "step_needs", "training_bytes"]
