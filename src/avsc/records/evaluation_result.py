"""An evaluation's scores: ``metrics.json`` (:class:`EvaluationResult`).

Written by :func:`avsc.evaluation.evaluate.evaluate` beside the report it was drawn from;
:func:`avsc.evaluation.evaluate.score` returns it without drawing anything. Its JSON keeps the
keys ``docs/fusion.md`` lists (``split``, ``labels``, ``provenance``, ``dataset``, ``results``,
``backbones``, ``reference``, ``warnings``, ``best``, ``best_per_modalities``, ``figures``)
beside ``format`` and ``version``. Scores are of calibrated probabilities unless named
``uncalibrated``; a score that cannot be computed (no rows) is NaN.

Example:
    >>> result = EvaluationResult(split="test", labels=("airport", "bus"), provenance=None,
    ...                           dataset=EvaluatedData("test", {"test": 4}, 4, {"airport": 2, "bus": 2}),
    ...                           results=(), best=None)
    >>> back = EvaluationResult.from_dict(result.to_dict())
    >>> back.split, back.dataset.n_clips, back.to_dict()["format"]
    ('test', 4, 'avsc-evaluation-result')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from avsc.records._base import Record

__all__ = [
    "EvaluationResult",
    "ClassificationScores",
    "CalibratedScores",
    "Uncalibrated",
    "ValCalibration",
    "ReliabilityBins",
    "FusionResult",
    "BackboneResult",
    "ReferenceResult",
    "Choice",
    "EvaluatedData",
    "Provenance",
    "SelectionRule",
    "Figures",
    "ScoredRows",
    "TrainingHistory",
]

# Fields kept in memory for rendering only: never written, empty when read back.
_IN_MEMORY = {"written": False}


def _json(value: Any) -> Any:
    """``value`` as JSON-ready data (see :meth:`EvaluationResult.to_dict`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("written", True) and not (item is None and f.default is None):
                out[f.name] = _json(item)
        return out
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class ClassificationScores:
    """:func:`avsc.scoring.metrics.classification_metrics` of one model on one split.

    Attributes:
        accuracy: share of rows whose arg-max is the true class.
        accuracy_ci: its 95 % Wilson interval ``(low, high)``.
        n_correct, n_clips: rows right, rows scored (clips, or segments on a segment run).
        log_loss: multi-class log loss (natural log), probabilities clipped as scikit-learn does.
        ece: top-label expected calibration error (15 equal-width bins).
        per_class_accuracy, per_class_count, per_class_correct, per_class_ci: per class
            with rows: recall, rows, rows right, 95 % Wilson interval.
        confusion_matrix: [shape=(10, 10)] rows = true class, columns = predicted.
        labels: the class names in matrix order.
    """

    accuracy: float
    accuracy_ci: tuple[float, float]
    n_correct: int
    log_loss: float
    ece: float
    per_class_accuracy: Mapping[str, float]
    per_class_count: Mapping[str, int]
    per_class_correct: Mapping[str, int]
    per_class_ci: Mapping[str, tuple[float, float]]
    confusion_matrix: tuple[tuple[int, ...], ...]
    n_clips: int
    labels: tuple[str, ...]

    @staticmethod
    def fields_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of these fields from a ``classification_metrics`` dict."""
        return {
            "accuracy": float(metrics["accuracy"]),
            "accuracy_ci": (float(metrics["accuracy_ci"][0]), float(metrics["accuracy_ci"][1])),
            "n_correct": int(metrics["n_correct"]),
            "log_loss": float(metrics["log_loss"]),
            "ece": float(metrics["ece"]),
            "per_class_accuracy": dict(metrics["per_class_accuracy"]),
            "per_class_count": dict(metrics["per_class_count"]),
            "per_class_correct": dict(metrics["per_class_correct"]),
            "per_class_ci": {k: (float(v[0]), float(v[1])) for k, v in metrics["per_class_ci"].items()},
            "confusion_matrix": tuple(tuple(int(c) for c in row) for row in metrics["confusion_matrix"]),
            "n_clips": int(metrics["n_clips"]),
            "labels": tuple(metrics["labels"]),
        }


@dataclasses.dataclass(frozen=True)
class Uncalibrated:
    """Log loss and ECE of the raw probabilities (``T = 1``)."""

    log_loss: float
    ece: float


@dataclasses.dataclass(frozen=True)
class CalibratedScores(ClassificationScores):
    """Scores of calibrated probabilities, the raw log loss and ECE beside them (``uncalibrated``)."""

    uncalibrated: Uncalibrated


@dataclasses.dataclass(frozen=True)
class ValCalibration:
    """A model's val log loss and ECE before and after its temperature (``{"log_loss", "ece"}``
    each), and the cross-validated val log loss (None: not run)."""

    before: Mapping[str, float]
    after: Mapping[str, float]
    cv_log_loss: float | None


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability over bins of equal counts
    (:func:`avsc.scoring.metrics.equal_count_reliability`): per bin its mean confidence, share
    right, rows, 95 % Wilson interval (``low``, ``high``) and confidence range (``edges``)."""

    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    count: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    edges: tuple[tuple[float, float], ...]


@dataclasses.dataclass(frozen=True)
class FusionResult(CalibratedScores):
    """One fusion model (method × modality set) on the evaluated split, with its val figures.

    Attributes:
        method, modalities: ``f1`` .. ``f6``; ``audio+visual``, ``audio`` or ``visual``.
        temperature, calibration_method, temperature_at_bound: its calibration (``fusion.json``).
        val_accuracy, val_log_loss: val scores of the kept weights, calibrated (``fusion.json``).
        val_selection_log_loss: the cross-validated val log loss it was chosen on (None: not
            recorded; ``val_log_loss`` stands in).
        val_selection_log_loss_se: that mean's standard error over the val rows (None: fewer
            than two rows).
        val_within_one_se: its selection log loss is within one standard error (the chosen
            model's) of the chosen model of its modality set: val cannot tell them apart. True
            for the chosen model itself.
        val_calibration: val log loss and ECE before and after ``T``.
        best_epoch, best_step, steps_run, stopped: how training went (``fusion.json``).
        fusion_dir: the folder scored.
        confusion_png, submission_csv: the report's files of this model.
        reliability: equal-count reliability bins of the calibrated probabilities.
        clip_level: on a segment run, the scores of whole clips (mean of their segments).
        clip_submission_csv: on a segment run, the whole clips' submission file.
    """

    method: str
    modalities: str
    temperature: float
    calibration_method: str
    temperature_at_bound: bool
    val_accuracy: float
    val_log_loss: float
    val_selection_log_loss: float | None
    val_selection_log_loss_se: float | None
    val_within_one_se: bool
    val_calibration: ValCalibration
    best_epoch: int
    best_step: int
    steps_run: int
    stopped: str
    fusion_dir: str
    confusion_png: str
    submission_csv: str
    reliability: ReliabilityBins
    clip_level: CalibratedScores | None = None
    clip_submission_csv: str | None = None

    @property
    def selection_log_loss(self) -> float:
        """The val log loss it is chosen on: cross-validated, else ``val_log_loss``."""
        return self.val_log_loss if self.val_selection_log_loss is None else self.val_selection_log_loss

    @property
    def name(self) -> str:
        """``<method>-<modalities>``, as in its file names."""
        return f"{self.method}-{self.modalities}"


@dataclasses.dataclass(frozen=True)
class BackboneResult(CalibratedScores):
    """One backbone alone on the evaluated split: the calibrated softmax of its ``fc10``.

    Attributes:
        backbone: its name (``aud-mel`` ...).
        temperature: the temperature recorded in its embeddings.
        val_calibration, calibration_method, temperature_at_bound: from its model folder's
            ``config.json`` (None / False when the model folders were not given).
    """

    backbone: str
    temperature: float
    val_calibration: ValCalibration | None = None
    calibration_method: str | None = None
    temperature_at_bound: bool = False


@dataclasses.dataclass(frozen=True)
class ReferenceResult(ClassificationScores):
    """The logistic-regression reference of one modality set
    (:func:`avsc.evaluation.reference.logistic_reference`): its embedding ``level``, the ``C``
    chosen on val, its val accuracy and log loss; its probabilities used as they come."""

    modalities: str
    level: str
    C: float
    val_accuracy: float
    val_log_loss: float


@dataclasses.dataclass(frozen=True)
class Choice:
    """A chosen fusion model: its method and modality set."""

    method: str
    modalities: str


@dataclasses.dataclass(frozen=True)
class EvaluatedData:
    """The evaluated rows: ``split``, the fusion data's clips per split, rows scored, rows per class."""

    split: str
    clips_per_split: Mapping[str, int]
    n_clips: int
    class_counts: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """The rule that chose the best model (``log_loss`` or ``accuracy``) and its description."""

    rule: str
    description: str


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where the numbers came from (:func:`avsc.evaluation.provenance.collect_provenance`).

    Attributes:
        avsc_version, created, run_id, split: this evaluation (``created``: ISO 8601, UTC).
        dataset: free-form facts of the manifest: ``name``, ``path``, ``synthetic``,
            ``generator``, ``manifest``, ``segment_seconds``, ``val_fraction``, ``split_seed``,
            ``rejected``, ``clips_per_split`` (and ``parent_clips_per_split`` on segments);
            without a manifest: ``name``, ``path``, ``synthetic`` as None, ``clips_per_split``.
        lineage: the inputs' common lineage (:class:`avsc.records.Lineage` as a dict, with
            ``store_hash``), None when no input records one.
        preset: the preset the recorded settings match (or ``custom (closest preset: …)``).
        differences_from_paper: ``{"setting", "value", "paper"}`` per setting that differs.
        config_hashes: ``{"features": hash, "train": {backbone: hash}, "fusion": {name: hash}}``
            (parts absent when unknown).
        selection: the selection rule.
        calibration, protocol: sentences for the report.
    """

    avsc_version: str
    created: str
    run_id: str
    split: str
    dataset: Mapping[str, Any]
    lineage: Mapping[str, Any] | None
    preset: str
    differences_from_paper: tuple[Mapping[str, Any], ...]
    config_hashes: Mapping[str, Any]
    selection: SelectionRule
    calibration: str
    protocol: str


@dataclasses.dataclass(frozen=True)
class Figures:
    """The report's figure files: reliability diagrams and training curves (None: none drawn)."""

    reliability: tuple[str, ...]
    training_curves: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredRows:
    """The rows behind one result's scores, kept for drawing (never written).

    Attributes:
        name: the model (``f4 audio+visual``, or a backbone).
        group: its figure: a modality set, or ``backbones``.
        clip_ids: [shape=(n,), str] rows in clip-id order.
        labels: [shape=(n,), str] their true labels.
        y_true: [shape=(n,), int] their class indices.
        raw, calibrated: [shape=(n, 10), float64] probabilities at ``T = 1`` and at ``temperature``.
        temperature: the model's ``T``.
    """

    name: str
    group: str
    clip_ids: npt.NDArray[np.str_]
    labels: npt.NDArray[np.str_]
    y_true: npt.NDArray[np.int64]
    raw: npt.NDArray[np.float64]
    calibrated: npt.NDArray[np.float64]
    temperature: float


@dataclasses.dataclass(frozen=True)
class TrainingHistory:
    """A model's per-epoch history (``history.json`` rows) and the epoch kept (never written)."""

    name: str
    epochs: tuple[Mapping[str, Any], ...]
    best_epoch: int


@dataclasses.dataclass(frozen=True)
class EvaluationResult(Record):
    """Every score of one evaluation (``REPORT_DIR/metrics.json``).

    Attributes:
        split, labels: the evaluated split; the class names in score order.
        provenance: where the numbers came from (None only in hand-made results).
        dataset: the evaluated rows.
        results: one per fusion model, by modality set then method.
        backbones: one per backbone alone (with embeddings, else empty).
        reference: the logistic-regression reference per modality set (with embeddings).
        warnings: what a reader must not miss (temperatures at a search bound).
        best: the audio+visual model val prefers (None: no result).
        best_per_modalities: the same per modality set.
        figures: the figures drawn (None until rendered).
        rows, histories: the arrays behind the scores and the training histories, kept in
            memory for drawing by :func:`avsc.evaluation.report.render`; not written, empty
            when read back.
    """

    FILE_NAME: ClassVar[str] = "metrics.json"
    FORMAT: ClassVar[str] = "avsc-evaluation-result"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc evaluate"

    split: str
    labels: tuple[str, ...]
    provenance: Provenance | None
    dataset: EvaluatedData
    results: tuple[FusionResult, ...]
    best: Choice | None
    best_per_modalities: Mapping[str, Choice] = dataclasses.field(default_factory=dict)
    backbones: tuple[BackboneResult, ...] = ()
    reference: tuple[ReferenceResult, ...] = ()
    warnings: tuple[str, ...] = ()
    figures: Figures | None = None
    rows: Mapping[str, ScoredRows] = dataclasses.field(
        default_factory=dict, compare=False, repr=False, metadata=_IN_MEMORY
    )
    histories: tuple[TrainingHistory, ...] = dataclasses.field(
        default=(), compare=False, repr=False, metadata=_IN_MEMORY
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``metrics.json``: ``rows`` and ``histories`` left out, and an optional
        part that does not apply (None where its default is None: ``clip_level`` of a run on
        whole clips, ``val_calibration`` of a backbone without its model folder) absent."""
        plain: dict[str, Any] = _json(self)
        return {"format": self.FORMAT, "version": self.VERSION, **plain}

    def result(self, choice: Choice | None) -> FusionResult | None:
        """The fusion result of ``choice`` (None when there is none)."""
        if choice is None:
            return None
        return next((r for r in self.results if (r.method, r.modalities) == (choice.method, choice.modalities)), None)
