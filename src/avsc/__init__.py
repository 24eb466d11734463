"""avsc: audio-visual scene classification with two-phase multimodal training.

The library does the work; ``pipeline.py`` and ``components/`` wrap it for Kubeflow
Pipelines, and nothing here imports kfp. The subpackages follow the data flow: ``media``
(ffmpeg), ``data`` (demo data, ingest, manifest), ``features`` (spectrograms, frames, the
feature store), ``models``, ``training`` (Phase I, embeddings, Phase II), ``evaluation``,
``inference`` (bundle, predict) and ``storage`` (files, the object store).

The main entry points are available flat, and loaded only when first used, so ``import
avsc`` stays cheap (no TensorFlow, no librosa); ``__init__.pyi`` lists them.

Example::

    import avsc
    cfg = avsc.load_config(preset="quick", overrides=["features.audio.frames=309"])
    result = avsc.preprocess("manifest.parquet", "features", config=cfg.features)
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
