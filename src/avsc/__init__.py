"""avsc: audio-visual scene classification with two-phase multimodal training.

The library does the work (ingest, media, features, models, training, embeddings,
fusion, evaluation, prediction); ``pipeline.py`` and ``components/`` wrap it for
Kubeflow Pipelines. Nothing here imports kfp.
"""

from avsc.labels import LABELS

__version__ = "0.1.0"

__all__ = ["LABELS", "__version__"]
