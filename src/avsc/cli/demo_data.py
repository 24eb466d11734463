"""``avsc demo-data``: write a small synthetic dataset in the TAU Urban Audio-Visual Scenes 2021 layout."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "demo-data",
        help="write a small synthetic dataset in the TAU 2021 layout",
        description="Write a synthetic audio-visual scene dataset (videos, WAVs, meta.csv, "
        "evaluation_setup/) in the layout of TAU Urban Audio-Visual Scenes 2021. "
        "Re-running with the same arguments keeps the clips already written.",
    )
    parser.add_argument("out", metavar="OUT", help="folder to create")
    parser.add_argument("--classes", type=positive_int, default=10, help="number of scenes, 1-10")
    parser.add_argument("--clips-per-class", type=positive_int, default=12, help="clips per scene")
    parser.add_argument("--locations-per-class", type=int, default=4, help="recording locations per scene, at least 3")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length in seconds")
    parser.add_argument("--seed", type=int, default=0, help="random seed for content and split")
    parser.add_argument("--width", type=int, default=320, help="video width in pixels")
    parser.add_argument("--height", type=int, default=240, help="video height in pixels")
    parser.add_argument("--fps", type=float, default=15.0, help="video frame rate")
    add_quiet(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.data.demo import make_demo_dataset

    result = make_demo_dataset(
        args.out,
        classes=args.classes,
        clips_per_class=args.clips_per_class,
        locations_per_class=args.locations_per_class,
        seconds=args.seconds,
        seed=args.seed,
        width=args.width,
        height=args.height,
        fps=args.fps,
        progress=not args.quiet,
    )
    print(
        f"wrote {result.n_clips} synthetic clips to {result.root} "
        f"({result.n_train} in fold1_train, {result.n_evaluate} in fold1_evaluate)"
    )
    print(f"next: avsc ingest {result.root} -o manifest.parquet")
    return 0
