"""``avsc bundle``: backbones + fusion model -> one portable model bundle folder."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "bundle",
        help="assemble backbones + fusion model into one portable bundle folder",
        description="Copy the backbones a fusion model reads and the fusion model itself into "
        "one folder with bundle.json (labels, feature config, clip length, SHA-256 of "
        "every file). The folder can be copied anywhere and used by `avsc predict` "
        "as is.",
        failure="also when a backbone differs from the one the fusion model was trained on",
    )
    parser.add_argument(
        "--models",
        required=True,
        metavar="MODELS_ROOT",
        help="folder holding <backbone>/model.keras and config.json (from `avsc train`)",
    )
    parser.add_argument("--fusion", required=True, metavar="FUSION_DIR", help="output folder of `avsc fuse`")
    parser.add_argument(
        "--visual-fusion",
        metavar="FUSION_DIR",
        help="a visual-only fusion model, for videos without an audio track (default: none)",
    )
    parser.add_argument(
        "--manifest",
        metavar="MANIFEST",
        help="the manifest the models were trained from (`avsc ingest`): records the "
        "dataset's name, whether it is synthetic and its clips per split in the "
        "bundle (default: recorded as unknown, and predict warns so)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="BUNDLE_DIR",
        help="folder (or s3://bucket/prefix) to write; every folder here may be s3://",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.inference.bundle import load_bundle
    from avsc.inference.bundle_writer import make_bundle

    out = make_bundle(
        args.models, args.fusion, args.output, visual_fusion_dir=args.visual_fusion, manifest=args.manifest
    )
    bundle = load_bundle(out)
    extra = f" + visual-only {bundle.visual_fusion.method}" if bundle.visual_fusion else ""
    print(
        f"bundle: {', '.join(bundle.backbones)} + {bundle.fusion.method} {bundle.fusion.modalities}"
        f"{extra}, {bundle.clip_seconds:g}-s windows -> {out}"
    )
    return 0
