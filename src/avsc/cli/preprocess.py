"""``avsc preprocess``: a manifest's clips -> a feature store (spectrograms and frames)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler` to a function(args) -> exit code."""
    parser = subparsers.add_parser(
        "preprocess", help="compute spectrograms and frames of a manifest's clips into a feature store",
        description="Demux each clip's audio from its video (32 kHz, 2 channels), compute MEL, "
                    "gammatone and CQT spectrograms, sample frames, and write them to a feature "
                    "store. Clips that fail are reported and skipped; re-running resumes; "
                    "--shard I/N processes a disjoint part so several machines can share the work.")
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest written by `avsc ingest` (path or s3://)")
    parser.add_argument("-o", "--output", required=True, metavar="FEATURES",
                        help="feature store folder or s3://bucket/prefix")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="process shard I of N (0-based; default 0/1, everything)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--config", metavar="FILE", help="JSON/TOML settings (features.audio, features.frames)")
    parser.add_argument("--preset", default="paper", choices=("paper", "quick"),
                        help="base settings: paper (10 s, 224x224) or quick (4 s, 96x96); default paper")
    parser.add_argument("--dataset-root", metavar="DIR",
                        help="where the dataset is now (folder or s3://), if it moved since ingest")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_preprocess)


def run_preprocess(args: argparse.Namespace) -> int:
    from avsc.config import load_config
    from avsc.errors import ConfigError
    from avsc.features.preprocess import parse_shard, preprocess

    shard = parse_shard(args.shard)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, not {args.workers}")
    config = load_config(args.config, preset=args.preset).features
    result = preprocess(args.manifest, args.output, config=config, shard=shard, workers=args.workers,
                        dataset_root=args.dataset_root, progress=not args.quiet)
    shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in result.shapes.items())
    print(f"preprocess {shard[0]}/{shard[1]}: {result.processed} processed, "
          f"{result.skipped_existing} already done, {len(result.rejected)} rejected "
          f"of {result.clips_in_shard} clips -> {args.output} ({shapes})")
    for item in result.rejected[:20]:
        print(f"  rejected {item['clip_id']}: {item['reason']}")
    if len(result.rejected) > 20:
        print(f"  ... and {len(result.rejected) - 20} more in {args.output}/summary.json")
    attempted = result.processed + len(result.rejected)
    if result.rejected and result.processed == 0 and result.skipped_existing == 0 and attempted:
        return 2
    return 0
