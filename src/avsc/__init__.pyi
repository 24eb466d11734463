# The flat public API of avsc, loaded lazily by lazy_loader (see __init__.py): each name is
# imported from its subpackage the first time it is used.
from . import (
    config as config,
    data as data,
    evaluation as evaluation,
    features as features,
    inference as inference,
    media as media,
    models as models,
    storage as storage,
    training as training,
)
from ._version import __version__ as __version__
from .config import (
    Config as Config,
    load_config as load_config,
)
from .data.demo import make_demo_dataset as make_demo_dataset
from .data.ingest import ingest_dataset as ingest_dataset
from .data.manifest import read_manifest as read_manifest
from .errors import (
    AvscError as AvscError,
    ConfigError as ConfigError,
    DataError as DataError,
    MediaError as MediaError,
    StoreError as StoreError,
)
from .evaluation.evaluate import evaluate as evaluate
from .features.preprocess import preprocess as preprocess
from .features.store import FeatureStore as FeatureStore
from .inference.bundle import load_bundle as load_bundle
from .inference.bundle_writer import make_bundle as make_bundle
from .inference.inspect import inspect_media as inspect_media
from .inference.predict import Predictor as Predictor
from .labels import LABELS as LABELS
from .media.decode import (
    demux_audio as demux_audio,
    sample_frames as sample_frames,
)
from .media.probe import probe_media as probe_media
from .training.backbone import train_backbone as train_backbone
from .training.embeddings import embed_clips as embed_clips
from .training.fusion import (
    train_all_fusions as train_all_fusions,
    train_fusion as train_fusion,
)
