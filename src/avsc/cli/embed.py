"""``avsc embed``: a trained backbone's fc1024/fc10 embeddings of every clip, as Parquet."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, positive_int, require_tensorflow


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "embed",
        help="write a trained backbone's fc1024/fc10 embeddings of every clip",
        description="Embed every clip of every split with a trained backbone into one Parquet "
        "file, which records the backbone, its settings' hash and the SHA-256 of "
        "its model. The settings come from MODEL_DIR/config.json (written by "
        "`avsc train`); the feature store must have been made with the same "
        "feature settings.",
        needs_tensorflow=True,
        failure="also when the feature store's settings differ from the model's",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="output folder of `avsc train` (or s3://)")
    parser.add_argument("features", nargs="+", metavar="FEATURES", help="feature store folder(s) or s3://bucket/prefix")
    parser.add_argument("-o", "--output", required=True, metavar="EMBEDDINGS.parquet", help="Parquet file to write")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="B",
        help="clips run through the model at once (memory, not results)",
    )
    add_quiet(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    require_tensorflow()
    from avsc.training.embeddings import embed_clips

    result = embed_clips(
        args.model_dir, args.features, args.output, batch_size=args.batch_size, progress=not args.quiet
    )
    print(f"{result.backbone}: {result.n_clips} clips -> {result.path}")
    return 0
