"""``avsc demo-data`` and ``avsc ingest``: make a synthetic dataset, validate one into a manifest."""

from __future__ import annotations

import argparse

from avsc.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler` to a function(args) -> exit code."""
    demo = subparsers.add_parser(
        "demo-data", help="write a small synthetic dataset in the TAU 2021 layout",
        description="Write a synthetic audio-visual scene dataset (videos, WAVs, meta.csv, "
                    "evaluation_setup/) in the layout of TAU Urban Audio-Visual Scenes 2021.")
    demo.add_argument("out", metavar="OUT", help="folder to create")
    demo.add_argument("--classes", type=int, default=10, help="number of scenes (1-10, default 10)")
    demo.add_argument("--clips-per-class", type=int, default=12, help="clips per scene (default 12)")
    demo.add_argument("--locations-per-class", type=int, default=4,
                      help="recording locations per scene, >= 3 (default 4)")
    demo.add_argument("--seconds", type=float, default=4.0, help="clip length in seconds (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--width", type=int, default=320, help="video width (default 320)")
    demo.add_argument("--height", type=int, default=240, help="video height (default 240)")
    demo.add_argument("--fps", type=float, default=15.0, help="video frame rate (default 15)")
    demo.set_defaults(handler=run_demo_data)

    ingest = subparsers.add_parser(
        "ingest", help="validate a dataset and write its clip manifest",
        description="Find the metadata, check every clip (label, name, video decodable with "
                    "sound), split train/val/test by location and write a Parquet manifest. "
                    "Bad rows are reported and left out; the rest is kept.")
    ingest.add_argument("dataset", metavar="DATASET",
                        help="dataset folder or s3://bucket/prefix (probed in place, not copied)")
    ingest.add_argument("-o", "--output", required=True, metavar="MANIFEST.parquet",
                        help="manifest to write, path or s3:// (a .rejected.json report goes beside it)")
    ingest.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each scene's train locations held out for validation (default 0.1)")
    ingest.add_argument("--seed", type=int, default=0, help="seed for the validation split (default 0)")
    ingest.add_argument("--decode-check", action="store_true",
                        help="also decode the first second of every video (slower)")
    ingest.set_defaults(handler=run_ingest)


def run_demo_data(args: argparse.Namespace) -> int:
    from avsc.data.demo import make_demo_dataset

    result = make_demo_dataset(
        args.out, classes=args.classes, clips_per_class=args.clips_per_class,
        locations_per_class=args.locations_per_class, seconds=args.seconds, seed=args.seed,
        width=args.width, height=args.height, fps=args.fps)
    print(f"wrote {result.n_clips} synthetic clips to {result.root} "
          f"({result.n_train} in fold1_train, {result.n_evaluate} in fold1_evaluate)")
    print(f"next: avsc ingest {result.root} -o manifest.parquet")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from avsc.data.ingest import ingest_dataset

    if not 0.0 <= args.val_fraction < 1.0:
        raise DataError("--val-fraction", f"must be in [0, 1), not {args.val_fraction}")
    result = ingest_dataset(args.dataset, args.output, val_fraction=args.val_fraction,
                            seed=args.seed, decode_check=args.decode_check)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    print(f"manifest {result.manifest_path}: {result.n_clips} clips ({counts})")
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
