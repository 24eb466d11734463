"""Stage 0: datasets and the clip manifest.

- :mod:`avsc.data.demo`: a synthetic dataset in the TAU Urban Audio-Visual Scenes 2021 layout
  (its sounds and pictures: :mod:`avsc.data.demo_content`).
- :mod:`avsc.data.dataset_lists`: find a dataset's split lists and read them.
- :mod:`avsc.data.ingest`: validate every clip, split train/val/test by location
  (:mod:`avsc.data.location_split`).
- :mod:`avsc.data.dataset_description`: what a dataset folder is (name, synthetic or not).
- :mod:`avsc.data.manifest`: the Parquet manifest that ingest writes and every later stage reads.
"""
