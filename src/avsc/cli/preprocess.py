"""``avsc preprocess``: a manifest's clips -> a feature store (spectrograms and frames)."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, add_settings_options, positive_int, resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "preprocess",
        help="compute spectrograms and frames of a manifest's clips into a feature store",
        description="Demux each clip's audio from its video, compute MEL, gammatone and CQT "
        "spectrograms, sample frames, and write them to a feature store with the "
        "settings and their hash. Clips that fail are reported and skipped; "
        "re-running resumes; --shard I/N processes a disjoint part so several "
        "machines can share the work. Finished clips are written at least every "
        "--flush-seconds and at once on SIGTERM (the run then ends with status "
        "143); a clip is processed again when its video changed, and labels "
        "and splits always come from MANIFEST.",
        failure="also when every clip this run tried was rejected (each is listed with its reason)",
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest written by `avsc ingest` (path or s3://)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FEATURES", help="feature store folder or s3://bucket/prefix"
    )
    parser.add_argument(
        "--shard", default="0/1", metavar="I/N", help="process shard I of N, numbered from 0 (0/1 is everything)"
    )
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--dataset-root",
        metavar="DIR",
        help="where the dataset is now (folder or s3://), if it moved since ingest "
        "(default: the folder recorded in the manifest)",
    )
    parser.add_argument(
        "--flush-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="write finished clips at least this often (a killed run loses at most "
        "the clips of the last S seconds; default 60)",
    )
    add_quiet(parser)
    add_settings_options(parser, sections="features.audio, features.frames")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.features.preprocess import preprocess
    from avsc.features.shards import parse_shard

    shard = parse_shard(args.shard)
    config = resolve_config(args)
    result = preprocess(
        args.manifest,
        args.output,
        config=config.features,
        shard=shard,
        workers=args.workers,
        dataset_root=args.dataset_root,
        progress=not args.quiet,
        flush_seconds=args.flush_seconds,
    )
    shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in result.shapes.items())
    print(
        f"preprocess {shard[0]}/{shard[1]}: {result.processed} processed, "
        f"{result.skipped_existing} already done, {len(result.rejected)} rejected "
        f"of {result.clips_in_shard} clips -> {args.output} ({shapes})"
    )
    for item in result.rejected[:20]:
        print(f"  rejected {item['clip_id']}: {item['reason']}")
    if len(result.rejected) > 20:
        print(f"  ... and {len(result.rejected) - 20} more in {args.output}/summary.json")
    if result.all_rejected:
        return 1
    return 0
