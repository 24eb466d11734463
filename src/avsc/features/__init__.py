"""Stage 2: features of every clip (MEL, gammatone, CQT spectrograms and frames) and their store.

- :mod:`avsc.features.spectrograms`: pure array code, ``compute_*`` (audio -> log spectrograms).
- :mod:`avsc.features.store`: the feature store that preprocessing writes and training streams.
- :mod:`avsc.features.preprocess`: a manifest shard -> the store, in parallel worker processes.
"""
