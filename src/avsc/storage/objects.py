"""What a bucket holds under a prefix: its objects, and the multipart uploads left unfinished.

``avsc data ls`` lists the first; ``avsc data clean-uploads`` lists and aborts the second
(a process killed during a large upload leaves one, whose parts take space but are no object).

Example::

    [obj.key for obj in list_objects("s3://avsc/datasets/demo")][:2]
    # ['meta.csv', 'video/airport-lisbon-1000-40000-0-a.mp4']
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from avsc.storage.s3 import S3Settings, Session, parse_uri

__all__ = [
    "StoredObject",
    "list_objects",
    "objects_under",
    "IncompleteUpload",
    "list_incomplete_uploads",
    "abort_incomplete_uploads",
]


@dataclass(frozen=True)
class StoredObject:
    """One object under a prefix: ``key`` relative to the prefix, ``size`` in bytes."""

    key: str
    size: int
    etag: str
    last_modified: Any


def list_objects(uri: str, *, settings: S3Settings | None = None) -> list[StoredObject]:
    """Every object under ``uri`` (recursive), with keys relative to its prefix, sorted.

    Raises:
        StoreError: bad credentials, missing bucket or unreachable endpoint.
    """
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    session.check_bucket(prefix)
    return objects_under(session, prefix)


def objects_under(session: Session, prefix: str) -> list[StoredObject]:
    """Every object of ``session``'s bucket under ``prefix``, keys relative to it, sorted."""
    cut = len(prefix) + 1 if prefix else 0
    objects = [
        StoredObject(
            key=obj.object_name[cut:],
            size=int(obj.size or 0),
            etag=(obj.etag or "").strip('"'),
            last_modified=obj.last_modified,
        )
        for obj in session.list(prefix)
    ]
    return sorted(objects, key=lambda obj: obj.key)


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted.

    Its parts take space in the bucket (and are billed) but are no object: a process killed
    during a large upload leaves one behind. ``key`` is the object's full key.
    """

    key: str
    upload_id: str
    initiated: Any  # datetime (UTC) or None when the service does not say


def list_incomplete_uploads(uri: str, *, settings: S3Settings | None = None) -> list[IncompleteUpload]:
    """Every incomplete multipart upload of an object under ``uri`` (``s3://bucket/prefix``),
    oldest first.

    Raises:
        StoreError: bad credentials, missing bucket or unreachable endpoint.
    """
    bucket, prefix = parse_uri(uri)
    session = Session(settings, bucket)
    uploads: list[IncompleteUpload] = []
    key_marker: str | None = None
    upload_id_marker: str | None = None
    while True:
        # ListMultipartUploads has no public wrapper in the minio client; its private one
        # builds and signs the request, which is all that is needed here.
        def page_at(key_marker: str | None = key_marker, upload_id_marker: str | None = upload_id_marker) -> Any:
            return session.client._list_multipart_uploads(
                bucket,
                prefix=f"{prefix}/" if prefix else None,
                key_marker=key_marker,
                upload_id_marker=upload_id_marker,
            )

        page = session.call(page_at)
        uploads += [
            IncompleteUpload(key=up.object_name, upload_id=up.upload_id or "", initiated=up.initiated_time)
            for up in page.uploads
        ]
        if not page.is_truncated or not page.uploads:
            break
        key_marker, upload_id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id
    return sorted(uploads, key=lambda up: (up.initiated is None, up.initiated or 0, up.key))


def abort_incomplete_uploads(
    uri: str, *, older_than_s: float = 3600.0, settings: S3Settings | None = None
) -> list[IncompleteUpload]:
    """Abort the incomplete multipart uploads under ``uri`` started more than ``older_than_s``
    seconds ago, freeing their parts; returns those aborted.

    A younger upload may belong to a transfer still running (aborting it would make that
    transfer fail and start over), so it is kept unless ``older_than_s`` is 0. An upload
    whose start time the service does not report is aborted only when ``older_than_s`` is 0.

    Raises:
        StoreError: bad credentials, missing bucket, unreachable endpoint, or an abort refused.
    """
    bucket, _ = parse_uri(uri)
    session = Session(settings, bucket)
    now = datetime.datetime.now(datetime.UTC)
    aborted = []
    for up in list_incomplete_uploads(uri, settings=settings):
        if older_than_s > 0 and (up.initiated is None or (now - up.initiated).total_seconds() < older_than_s):
            continue

        def abort(up: IncompleteUpload = up) -> Any:
            return session.client._abort_multipart_upload(bucket, up.key, up.upload_id)

        session.call(abort, up.key)
        aborted.append(up)
    return aborted
