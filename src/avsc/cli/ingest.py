"""``avsc ingest``: validate a dataset and write its clip manifest."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, add_settings_options, add_shorthand, resolve_config
from avsc.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "ingest",
        help="validate a dataset and write its clip manifest",
        description="Find the metadata, check every clip (label, name, video decodable with "
        "sound), split train/val/test by location and write a Parquet manifest. "
        "Each clip's sound is the dataset's WAV or the video's audio track "
        "(data.audio_source: auto, wav or video; recorded per clip). "
        "Bad rows are reported and left out; the rest is kept. With "
        "data.segment_seconds (--segment-seconds S) each clip becomes S-second "
        "segments, one manifest row each, after the split.",
        failure="also when the dataset folder or its metadata is missing, or no clip is usable",
    )
    parser.add_argument(
        "dataset", metavar="DATASET", help="dataset folder or s3://bucket/prefix (probed in place, not copied)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MANIFEST.parquet",
        help="manifest to write (a .rejected.json report goes beside it)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of each scene's train locations held out for validation, in [0, 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the validation split")
    parser.add_argument(
        "--decode-check", action="store_true", help="also decode the first second of every video (slower)"
    )
    add_quiet(parser)
    settings = add_settings_options(parser, sections="data")
    add_shorthand(
        settings,
        "--segment-seconds",
        "data.segment_seconds",
        type=float,
        metavar="S",
        what="cut every clip into S-second segments after the split (1 = the DCASE 2021 "
        "Task 1B protocol; preprocess then needs features.audio.clip_seconds = S); "
        "unset: whole clips",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.data.ingest import ingest_dataset

    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    data = resolve_config(args).data
    segment_seconds = data.segment_seconds
    result = ingest_dataset(
        args.dataset,
        args.output,
        val_fraction=args.val_fraction,
        seed=args.seed,
        decode_check=args.decode_check,
        segment_seconds=segment_seconds,
        progress=not args.quiet,
        audio_source=data.audio_source,
    )
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    unit = f"{segment_seconds:g}-s segments" if segment_seconds else "clips"
    print(f"manifest {result.manifest_path}: {result.n_clips} {unit} ({counts})")
    if result.notes:
        print(f"{len(result.notes)} note(s):")
        for note in result.notes[:20]:
            print(f"  {note}")
        if len(result.notes) > 20:
            print(f"  ... and {len(result.notes) - 20} more in {result.rejected_path}")
    if result.rejected:
        print(f"{len(result.rejected)} rejected:")
        for item in result.rejected:
            print(f"  {item['file']}: {item['reason']}")
    print(f"report: {result.rejected_path}")
    return 0
