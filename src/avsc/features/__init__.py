"""Stage 2: features of every clip (MEL, gammatone, CQT spectrograms and frames) and their store.

- :mod:`avsc.features.spectrograms`: pure array code, ``compute_*`` (audio -> log spectrograms).
- :mod:`avsc.features.store`: the feature store's layout, and opening it (its index, its parts per split).
- :mod:`avsc.features.store_format`: how one clip's feature is stored (spec, bytes, JPEG
  frames, digests), the format names, ``store.json``'s check.
- :mod:`avsc.features.part_writer`: encoding clips and writing them as parts.
- :mod:`avsc.features.part_reader`: reading one feature of a part's clips, verified.
- :mod:`avsc.features.store_writer`: the rest of writing it: ``store.json``, indexes,
  summaries, resume, conversion.
- :mod:`avsc.features.clip_workers`: one clip's features, and the worker processes that
  compute them (forked from a fork server warmed by :mod:`avsc.features.worker_warmup`).
- :mod:`avsc.features.preprocess`: a manifest shard -> the store.
- :mod:`avsc.features.shards`: which clips a shard holds, their fingerprints, which are done.
"""
