"""Stage 0: datasets and the clip manifest.

- :mod:`avsc.data.demo`: a synthetic dataset in the TAU Urban Audio-Visual Scenes 2021 layout.
- :mod:`avsc.data.ingest`: find the metadata, validate every clip, split train/val/test by location.
- :mod:`avsc.data.manifest`: the Parquet manifest that ingest writes and every later stage reads.
"""
