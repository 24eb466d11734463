"""``avsc data push|pull|ls|uploads``: move datasets and outputs to and from an S3-compatible store.

The endpoint and credentials come from ``AVSC_S3_ENDPOINT``, ``AVSC_S3_ACCESS_KEY``,
``AVSC_S3_SECRET_KEY`` (and optionally ``AVSC_S3_REGION``, ``AVSC_S3_SECURE``).
"""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, positive_int

_ENV_HELP = (
    "The store is named by AVSC_S3_ENDPOINT (host:port or http(s)://host:port), "
    "AVSC_S3_ACCESS_KEY, AVSC_S3_SECRET_KEY, and optionally AVSC_S3_REGION and "
    "AVSC_S3_SECURE (true|false)."
)
_STORE_FAILURE = "also when the store is not configured, refuses the credentials, lacks the bucket or cannot be reached"


def register(subparsers: argparse._SubParsersAction) -> None:
    data = add_command(
        subparsers,
        "data",
        help="push, pull and list datasets and outputs in an S3-compatible store",
        description="Move folders to and from an object store (MinIO, SeaweedFS, AWS S3). " + _ENV_HELP,
        failure=_STORE_FAILURE,
    )
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    push = add_command(
        actions,
        "push",
        help="upload a folder to s3://bucket/prefix",
        description="Upload every file under DATASET, in parallel. Objects already holding the "
        "same bytes are skipped, so a re-run resumes; sizes and SHA-256 are "
        "verified. " + _ENV_HELP,
        failure=_STORE_FAILURE + ", or a file could not be read (the others are uploaded)",
    )
    push.add_argument("source", metavar="DATASET", help="local folder to upload")
    push.add_argument("uri", metavar="s3://BUCKET/PREFIX", help="destination (the bucket must exist)")
    _transfer_options(push)
    push.set_defaults(handler=run_push)

    pull = add_command(
        actions,
        "pull",
        help="download s3://bucket/prefix into a folder",
        description="Download every object under the prefix, in parallel, each to a temporary "
        "file renamed into place once its size and SHA-256 are verified. Files "
        "already present with the same size and hash are skipped. " + _ENV_HELP,
        failure=_STORE_FAILURE + ", or nothing is under the prefix",
    )
    pull.add_argument("uri", metavar="s3://BUCKET/PREFIX", help="source prefix")
    pull.add_argument("dest", metavar="DIR", help="local folder to write into")
    pull.add_argument(
        "--include",
        action="append",
        metavar="KEY",
        help="only this key, relative to the prefix; repeatable (default: every object)",
    )
    _transfer_options(pull)
    pull.set_defaults(handler=run_pull)

    ls = add_command(
        actions,
        "ls",
        help="list the objects under s3://bucket/prefix",
        description="List every object under the prefix (recursively) with its size. " + _ENV_HELP,
        failure=_STORE_FAILURE,
    )
    ls.add_argument("uri", metavar="s3://BUCKET[/PREFIX]", help="bucket or prefix to list")
    ls.set_defaults(handler=run_ls)

    uploads = add_command(
        actions,
        "uploads",
        help="list (and abort) incomplete multipart uploads under s3://bucket/prefix",
        description="A process killed while it uploads a large object leaves an incomplete "
        "multipart upload: its parts take space in the bucket but form no object. "
        "List them under the prefix, or abort them with --abort. " + _ENV_HELP,
        failure=_STORE_FAILURE,
    )
    uploads.add_argument("uri", metavar="s3://BUCKET[/PREFIX]", help="bucket or prefix to look under")
    uploads.add_argument(
        "--abort", action="store_true", help="abort the uploads started more than --older-than hours ago"
    )
    uploads.add_argument(
        "--older-than",
        type=float,
        default=1.0,
        metavar="HOURS",
        help="with --abort: leave younger uploads alone, they may belong to a "
        "transfer still running (0 aborts every one)",
    )
    uploads.set_defaults(handler=run_uploads)


def _transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=positive_int, default=8, metavar="N", help="files transferred at the same time"
    )
    add_quiet(parser)


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def run_push(args: argparse.Namespace) -> int:
    from avsc.storage.sync import push_dir

    result = push_dir(args.source, args.uri, workers=args.workers, progress=not args.quiet)
    print(f"{args.uri}: {result.transferred} uploaded ({_human(result.bytes)}), {result.skipped} already there")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from avsc.storage.sync import pull_dir

    result = pull_dir(args.uri, args.dest, include=args.include, workers=args.workers, progress=not args.quiet)
    print(f"{args.dest}: {result.transferred} downloaded ({_human(result.bytes)}), {result.skipped} already there")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    from avsc.storage.objects import list_objects
    from avsc.storage.s3 import parse_uri

    bucket, prefix = parse_uri(args.uri)
    base = f"s3://{bucket}/{prefix + '/' if prefix else ''}"
    objects = list_objects(args.uri)
    for obj in objects:
        stamp = obj.last_modified.strftime("%Y-%m-%d %H:%M:%S") if obj.last_modified else "-"
        print(f"{obj.size:>12}  {stamp}  {base}{obj.key}")
    print(f"{len(objects)} objects, {_human(sum(obj.size for obj in objects))}")
    return 0


def run_uploads(args: argparse.Namespace) -> int:
    from avsc.errors import ConfigError
    from avsc.storage.objects import abort_incomplete_uploads, list_incomplete_uploads

    if args.older_than < 0:
        raise ConfigError(f"--older-than must be 0 or more hours, not {args.older_than:g}")
    bucket, _ = _bucket(args.uri)
    if args.abort:
        aborted = abort_incomplete_uploads(args.uri, older_than_s=args.older_than * 3600)
        for up in aborted:
            print(f"aborted  {_stamp(up.initiated)}  s3://{bucket}/{up.key}")
        print(f"{len(aborted)} incomplete uploads aborted")
        return 0
    found = list_incomplete_uploads(args.uri)
    for up in found:
        print(f"{_stamp(up.initiated)}  s3://{bucket}/{up.key}  {up.upload_id}")
    print(f"{len(found)} incomplete uploads" + ("; abort them with --abort" if found else ""))
    return 0


def _bucket(uri: str) -> tuple[str, str]:
    from avsc.storage.s3 import parse_uri

    return parse_uri(uri)


def _stamp(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
