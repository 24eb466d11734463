"""Stage 2: features of every clip (MEL, gammatone, CQT spectrograms and frames) and their store.

- :mod:`avsc.features.spectrograms`: pure array code, ``compute_*`` (audio -> log spectrograms).
- :mod:`avsc.features.store`: the feature store's format, and reading it (one feature at a time).
- :mod:`avsc.features.store_writer`: writing it: parts, indexes, summaries, resume, conversion.
- :mod:`avsc.features.preprocess`: a manifest shard -> the store, in parallel worker processes
  (forked from a fork server warmed by :mod:`avsc.features.worker_warmup`).
"""
