"""What one training epoch reads, in which order, and its mixup draws, defined in NumPy.

Both input streams, tf.data (:mod:`avsc.training.streams`) and NumPy
(:mod:`avsc.training.numpy_stream`), realise the same :class:`EpochPlan`, so for a given seed
they give the same batches, example for example, with the same mixup weights and partners:

1. the train split's part files are put in a seeded random order;
2. consecutive parts of that order form a *shuffle group* of about ``shuffle_buffer``
   examples (clips; frames for a visual backbone);
3. the examples of a group are put in a seeded random order (the shuffle), and the groups
   follow one another: the epoch is the concatenation of the shuffled groups, cut into
   batches (the last one shorter);
4. batch ``step`` draws ``lam ~ Beta(alpha, alpha)`` and a random permutation of the batch
   (the mixup partners) from a generator seeded by ``(seed, step)``.

A group is read whole (its parts in parallel threads), so memory is bounded by the groups in
flight, whatever the store's size; a group plays the role of a shuffle buffer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from avsc.features.part_reader import Part, read_part_feature
from avsc.features.store import FeatureSpec
from avsc.labels import LABEL_INDEX, LABELS

__all__ = ["EpochPlan", "part_loader", "mixup_draws", "epoch_plan"]

_ORDER, _SHUFFLE, _MIXUP = 0x5EED, 0x5AF1, 0x313C  # stream tags of the generators' seeds


def part_loader(parts: list[Part], spec: FeatureSpec, frames_per_clip: int | None, seed: int):
    """A NumPy function (part number) -> (examples, int32 labels) of that part.

    Audio: ``[n_clips, *shape]`` float16. Visual: the chosen frames of every clip, as JPEG
    bytes ``[n_frames]`` (an object array), or uint8 pixels ``[n_frames, H, W, 3]`` for a raw
    store; ``frames_per_clip`` random frames of each clip, drawn from ``(seed, part number)``.
    """
    labels = [np.array([LABEL_INDEX[v] for v in part.labels], np.int32) for part in parts]
    visual = spec.name == "frames"

    def load(number) -> tuple[np.ndarray, np.ndarray]:
        number = int(number)
        part = parts[number]
        values = read_part_feature(part, spec, decode=False)  # verified against the index's digests
        if not visual:
            return np.ascontiguousarray(values), labels[number]
        n_frames = spec.shape[0]
        rng = np.random.default_rng([seed, number])
        chosen = [
            np.arange(n_frames)
            if frames_per_clip is None or frames_per_clip >= n_frames
            else np.sort(rng.choice(n_frames, frames_per_clip, replace=False))
            for _ in range(len(part.rows))
        ]
        clip_labels = (
            np.concatenate([np.full(len(c), y, np.int32) for c, y in zip(chosen, labels[number], strict=True)])
            if chosen
            else np.zeros(0, np.int32)
        )
        if spec.encoding == "jpeg":
            jpegs = np.empty(sum(len(c) for c in chosen), dtype=object)
            jpegs[:] = [clip[i] for clip, picks in zip(values, chosen, strict=True) for i in picks]
            return jpegs, clip_labels
        return np.concatenate([clip[picks] for clip, picks in zip(values, chosen, strict=True)]), clip_labels

    return load


def mixup_draws(alpha: float, seed: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The mixup weights ``lam`` [shape=(n,), float32] and partners ``perm`` [shape=(n,), int32]
    of batch ``step``; all ones and the identity when ``alpha`` is 0 (no mixup)."""
    if not alpha or alpha <= 0:
        return np.ones(n, np.float32), np.arange(n, dtype=np.int32)
    rng = np.random.default_rng([seed, _MIXUP, step])
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    return lam, rng.permutation(n).astype(np.int32)


def soft_labels(labels: np.ndarray, lam: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``[shape=(n, 10)] float32``: one-hot ``labels`` mixed as the inputs are."""
    y = np.eye(len(LABELS), dtype=np.float32)[np.asarray(labels)]
    return lam[:, None] * y + (1.0 - lam[:, None]) * y[perm]


@dataclass(frozen=True)
class EpochPlan:
    """The examples of one pass over some parts, grouped and shuffled (see the module doc).

    Attributes:
        parts: the parts, indexed by part number.
        spec: the feature read.
        groups: per group, the part numbers it reads, in order.
        group_sizes: examples per group.
        seed: the epoch's seed; ``shuffle``: whether each group's examples are permuted.
        frames_per_clip: visual backbones: frames drawn per clip (None: all).
        read_threads: parts of a group read at the same time.
    """

    parts: tuple[Part, ...]
    spec: FeatureSpec
    groups: tuple[tuple[int, ...], ...]
    group_sizes: tuple[int, ...]
    seed: int
    shuffle: bool
    frames_per_clip: int | None
    mixup_alpha: float = 0.0
    read_threads: int = 4

    @property
    def n_examples(self) -> int:
        return sum(self.group_sizes)

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_examples // batch_size)

    @property
    def jpeg(self) -> bool:
        return self.spec.name == "frames" and self.spec.encoding == "jpeg"

    def read_group(self, group) -> tuple[np.ndarray, np.ndarray]:
        """Group ``group``'s examples and int32 labels, in the epoch's order (shuffled when
        training). Examples as stored (float16, uint8, or JPEG bytes as an object array)."""
        group = int(group)
        numbers = self.groups[group]
        load = part_loader(list(self.parts), self.spec, self.frames_per_clip, self.seed)
        if len(numbers) == 1 or self.read_threads <= 1:
            loaded = [load(n) for n in numbers]
        else:
            # pyarrow's reads release the GIL: the parts of a group come in together.
            with ThreadPoolExecutor(min(self.read_threads, len(numbers))) as pool:
                loaded = list(pool.map(load, numbers))
        x = np.concatenate([x for x, _ in loaded]) if len(loaded) > 1 else loaded[0][0]
        y = np.concatenate([y for _, y in loaded]) if len(loaded) > 1 else loaded[0][1]
        if len(y) != self.group_sizes[group]:
            raise RuntimeError(
                f"shuffle group {group} holds {len(y)} examples, the index says {self.group_sizes[group]}"
            )
        if not self.shuffle:
            return x, y
        order = np.random.default_rng([self.seed, _SHUFFLE, group]).permutation(len(y))
        return x[order], y[order]

    def batch_labels(self, step: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lam, perm, y_soft)`` of batch ``step`` with these int labels (see :func:`mixup_draws`)."""
        lam, perm = mixup_draws(self.mixup_alpha, self.seed, int(step), len(labels))
        return lam, perm, soft_labels(labels, lam, perm)


def epoch_plan(
    parts: list[Part],
    spec: FeatureSpec,
    *,
    train: bool,
    seed: int = 0,
    frames_per_clip: int | None = None,
    shuffle_buffer: int = 2048,
    mixup_alpha: float = 0.0,
    read_threads: int = 4,
) -> EpochPlan:
    """The plan of a training epoch (``train``: parts in a seeded order, groups of about
    ``shuffle_buffer`` examples shuffled) or of an evaluation pass (store order, one part a
    group, no shuffle, every frame)."""
    visual = spec.name == "frames"
    per_clip = 1 if not visual else spec.shape[0] if frames_per_clip is None else min(frames_per_clip, spec.shape[0])
    sizes = [len(part.rows) * per_clip for part in parts]
    if not train:
        groups: list[tuple[int, ...]] = [(n,) for n in range(len(parts))]
    else:
        order = np.random.default_rng([seed, _ORDER]).permutation(len(parts))
        per_group = max(1, -(-shuffle_buffer // max([1, *sizes])))
        groups = [tuple(int(n) for n in order[i : i + per_group]) for i in range(0, len(order), per_group)]
    return EpochPlan(
        parts=tuple(parts),
        spec=spec,
        groups=tuple(groups),
        group_sizes=tuple(sum(sizes[n] for n in g) for g in groups),
        seed=seed,
        shuffle=train,
        frames_per_clip=frames_per_clip if visual else None,
        mixup_alpha=mixup_alpha if train else 0.0,
        read_threads=read_threads,
    )
