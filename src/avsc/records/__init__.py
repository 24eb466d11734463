"""Records: every file one stage hands to the next, as a frozen dataclass with one home.

Each record knows its file name, its format and version, how to read and write itself (a local
folder or an ``s3://`` prefix), and the data it was made from (:class:`Lineage`). Readers use
attributes, never ``.get("key", default)``; a file of another format or version is refused with
a message naming it.

Example:
    >>> from avsc.records import Calibration, Lineage, ModelInfo
    >>> info = ModelInfo(backbone="aud-mel", train={"epochs": 3}, config_hash="abc",
    ...                  features={}, feature_config_hash="def", feature_shapes={"mel": (128, 715, 2)},
    ...                  labels=("airport",), best_epoch=2, selection="log_loss",
    ...                  calibration=Calibration(1.5, {"log_loss": 1.2}, {"log_loss": 1.1}),
    ...                  lineage=Lineage("demo", "0123456789abcdef"))
    >>> ModelInfo.from_dict(info.to_dict()) == info
    True
"""

from avsc.records._base import Record, RecordError
from avsc.records.bundle_info import BundleFusion, BundleInfo, BundleProvenance
from avsc.records.embeddings_info import EmbeddingsInfo
from avsc.records.evaluation_result import EvaluationResult
from avsc.records.fusion_info import FusionInfo
from avsc.records.lineage import Lineage
from avsc.records.model_info import Calibration, ModelInfo
from avsc.records.output_manifest import OutputFile, OutputManifest
from avsc.records.predictions import Predictions
from avsc.records.store_summary import RejectedClip, StoreSummary

__all__ = [
    "Record",
    "RecordError",
    "Lineage",
    "Calibration",
    "ModelInfo",
    "FusionInfo",
    "BundleInfo",
    "BundleFusion",
    "BundleProvenance",
    "OutputFile",
    "OutputManifest",
    "Predictions",
    "EvaluationResult",
    "StoreSummary",
    "RejectedClip",
    "EmbeddingsInfo",
]
