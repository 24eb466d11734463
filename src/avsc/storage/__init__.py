"""Where bytes live: local files written atomically, and the S3-compatible object store.

- :mod:`avsc.storage.files`: atomic writes, JSON, SHA-256 of files.
- :mod:`avsc.storage.s3`: ``s3://bucket/prefix`` URIs, settings from ``AVSC_S3_*``, the client,
  error mapping and retries.
- :mod:`avsc.storage.sync`: folders and files to and from the object store (``avsc data push|pull``);
  :mod:`avsc.storage.transfer`: one object's verified upload or download;
  :mod:`avsc.storage.objects`: what is under a prefix (``avsc data ls``), unfinished uploads.
- :mod:`avsc.storage.locations`: one way to read and write a local path or an ``s3://`` URI
  (ranged reads through pyarrow's S3 filesystem, atomic writes, presigned URLs for ffmpeg);
  :mod:`avsc.storage.staging`: local copies of ``s3://`` inputs and outputs for tools that
  read and write local files only.
"""
