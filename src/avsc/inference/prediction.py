"""The class of one video, as :class:`avsc.inference.predict.Predictor` finds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """The class of one video.

    Attributes:
        path: the video file.
        label: the most probable scene.
        probabilities: label -> probability (alphabetical labels, summing to 1): the mean
            of the windows' probabilities.
        windows: number of windows averaged.
        modalities: what the fusion model used: ``audio+visual``, ``audio`` or ``visual``.
        method: the fusion method (``f1`` .. ``f6``).
        window_offsets: start of each window in seconds.
        window_probabilities: [shape=(windows, 10)] each window's probabilities.
        warnings: what the user should know (several audio tracks, silent windows left
            out, streams of different lengths, a bundle trained on synthetic data, a video
            far from the training data, ...).
        distance: the windows' mean distance from the fusion model's training data
            (:func:`avsc.models.fusion.distance_score`; about 1 for clips like the training
            clips), NaN for a model without standardisation.
        distance_threshold: the 99th percentile of the val clips' distance, above which the
            video is flagged as far from the training data.
        provenance: what the bundle's models were trained on (``bundle.json["provenance"]``).
    """

    path: str
    label: str
    probabilities: dict[str, float]
    windows: int
    modalities: str
    method: str = ""
    window_offsets: tuple[float, ...] = ()
    window_probabilities: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    warnings: tuple[str, ...] = ()
    distance: float = float("nan")
    distance_threshold: float = float("nan")
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``avsc predict --json`` prints, one object a line)."""

        def finite(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        return {
            "path": self.path,
            "label": self.label,
            "probabilities": self.probabilities,
            "windows": self.windows,
            "window_offsets": list(self.window_offsets),
            "modalities": self.modalities,
            "method": self.method,
            "warnings": list(self.warnings),
            "distance": finite(self.distance),
            "distance_threshold": finite(self.distance_threshold),
            "bundle": self.provenance,
        }
