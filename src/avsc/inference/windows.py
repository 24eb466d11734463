"""The windows a video is cut into for classification (:class:`avsc.inference.predict.Predictor`)
and for ``avsc inspect`` (:func:`avsc.inference.inspect.inspect_media`).

A video is cut into windows of the training clip length: the first ones back to back from
the start, the last one aligned to the end of the video, so that no window holds padding
when the video is longer than one clip.
"""

from __future__ import annotations

import math

__all__ = ["WINDOW_TOLERANCE", "window_offsets"]

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
