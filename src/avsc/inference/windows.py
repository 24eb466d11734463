"""The windows a video is cut into for classification (:class:`avsc.inference.predict.Predictor`)
and for ``avsc inspect`` (:func:`avsc.inference.inspect.inspect_media`), and what the
predictor decodes from each.

A video is cut into windows of the training clip length: the first ones back to back from
the start, the last one aligned to the end of the video, so that no window holds padding
when the video is longer than one clip. Each window is decoded exactly as the training
clips were (:func:`decode_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from avsc.config import AudioConfig, FeatureConfig
    from avsc.media.probe import MediaInfo

__all__ = ["WINDOW_TOLERANCE", "decode_windows", "silent_windows", "window_offsets"]

# A video this much longer than a clip (as a fraction of the clip) is still one window.
WINDOW_TOLERANCE = 0.025


def window_offsets(duration_s: float | None, clip_seconds: float) -> list[float]:
    """Start times (seconds) of the windows a video of ``duration_s`` is cut into.

    ``n = max(1, ceil(duration_s / clip_seconds))`` windows (a tail of at most 2.5 % of a
    clip is ignored); the first ``n - 1`` start at ``0, clip, 2 clip, ...`` and the last
    one ends where the video ends. Unknown or non-positive durations give one window at 0.

    Example:
        >>> window_offsets(25.0, 10.0)
        [0.0, 10.0, 15.0]
    """
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= clip_seconds * (1 + WINDOW_TOLERANCE):
        return [0.0]
    n = max(1, math.ceil(duration_s / clip_seconds - WINDOW_TOLERANCE))
    offsets = [float(i * clip_seconds) for i in range(n - 1)]
    offsets.append(max(0.0, duration_s - clip_seconds))
    return [round(float(o), 6) for o in offsets]


def decode_windows(
    path: str | Path,
    offsets: Iterable[float],
    features: Sequence[str],
    config: FeatureConfig,
    clip_seconds: float,
    info: MediaInfo,
) -> dict[str, np.ndarray]:
    """The ``features`` of each window of ``path``, decoded as the training clips were, stacked.

    Args:
        path: the video (a file or an ``s3://`` object).
        offsets: start of each window, seconds (:func:`window_offsets`).
        features: feature names (``frames`` and the spectrograms of
            :func:`avsc.features.spectrograms.compute_clip_features`).
        config: the feature config the models were trained on.
        clip_seconds: the window length, seconds.
        info: the file's probe (:func:`avsc.media.probe.probe_media`).

    Returns:
        feature name -> [shape=(n_windows, ...)], windows in the order of ``offsets``.

    Raises:
        MediaError: the file cannot be decoded (names it).
    """
    from avsc.media.decode import demux_audio, sample_frames

    needs_audio = any(f != "frames" for f in features)
    stacked: dict[str, list[np.ndarray]] = {f: [] for f in features}
    # The video decode (an ffmpeg process) runs while this thread computes spectrograms.
    with ThreadPoolExecutor(max_workers=1) as pool:
        for offset in offsets:
            frames = None
            if "frames" in features:
                frames = pool.submit(
                    sample_frames, path, config.frames, seconds=clip_seconds, offset_s=offset, info=info
                )
            computed: dict[str, np.ndarray] = {}
            if needs_audio:
                from avsc.features.spectrograms import compute_clip_features

                audio = demux_audio(path, config.audio, offset_s=offset, duration_s=clip_seconds, info=info)
                computed = compute_clip_features(audio, None, config)
            if frames is not None:
                computed["frames"] = frames.result()
            for name in features:
                stacked[name].append(np.asarray(computed[name]))
    return {name: np.stack(arrays) for name, arrays in stacked.items()}


def silent_windows(
    path: str | Path, offsets: Iterable[float], config: AudioConfig, clip_seconds: float, info: MediaInfo
) -> list[float]:
    """Offsets of the windows whose sound is digital silence
    (:func:`avsc.media.decode.is_silent`).

    Decoding the sound is about 1 % of a window's cost, so the predictor decodes it once more
    here rather than keep it in memory.
    """
    from avsc.media.decode import demux_audio, is_silent

    return [o for o in offsets if is_silent(demux_audio(path, config, offset_s=o, duration_s=clip_seconds, info=info))]
