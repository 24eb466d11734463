"""``avsc bundle`` (assemble a model bundle) and ``avsc predict`` (classify videos with it)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bundle`` and ``predict``."""
    bundle = subparsers.add_parser(
        "bundle", help="assemble backbones + fusion model into one portable bundle folder",
        description="Copy the backbones a fusion model reads and the fusion model itself into one folder "
                    "with bundle.json (labels, feature config, clip length, SHA-256 of every file). "
                    "The folder can be copied anywhere and used by `avsc predict` as is.")
    bundle.add_argument("--models", required=True, metavar="MODELS_ROOT",
                        help="folder holding <backbone>/model.keras and config.json (from `avsc train`)")
    bundle.add_argument("--fusion", required=True, metavar="FUSION_DIR", help="output folder of `avsc fuse`")
    bundle.add_argument("--visual-fusion", metavar="FUSION_DIR",
                        help="optional visual-only fusion model, for videos without an audio track")
    bundle.add_argument("-o", "--output", required=True, metavar="BUNDLE_DIR",
                        help="folder or s3://bucket/prefix (every folder here may be s3://)")
    bundle.set_defaults(handler=run_bundle)

    predict = subparsers.add_parser(
        "predict", help="classify video files with a model bundle",
        description="Classify each video (any length, resolution, channel layout): windows of the "
                    "training clip length, features, the backbones and the fusion model; window "
                    "probabilities are averaged. Prints FILE<TAB>LABEL<TAB>PROBABILITY per video, or "
                    "one JSON object per video with --json. Exit status: 0 all classified, 1 some "
                    "failed, 2 all failed.")
    predict.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (paths or s3:// URIs)")
    predict.add_argument("--bundle", required=True, metavar="BUNDLE_DIR", help="bundle folder or s3://bucket/prefix")
    predict.add_argument("--json", action="store_true",
                         help="one JSON object per line: path, label, probabilities, windows, modalities")
    predict.add_argument("--allow-visual-only", action="store_true",
                         help="classify videos without sound with the bundle's visual-only fusion model")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(handler=run_predict)


def run_bundle(args: argparse.Namespace) -> int:
    from avsc.inference.bundle import load_bundle, make_bundle

    out = make_bundle(args.models, args.fusion, args.output, visual_fusion_dir=args.visual_fusion)
    bundle = load_bundle(out)
    extra = f" + visual-only {bundle.visual_fusion.method}" if bundle.visual_fusion else ""
    print(f"bundle: {', '.join(bundle.backbones)} + {bundle.fusion.method} {bundle.fusion.modalities}"
          f"{extra}, {bundle.clip_seconds:g}-s windows -> {out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    from tqdm import tqdm

    from avsc.inference.predict import Predictor

    # Graph functions: at the paper's sizes tracing them costs about what op-by-op running
    # loses on the first video alone, and every later video runs about 1.5x faster.
    predictor = Predictor.load(args.bundle, allow_visual_only=args.allow_visual_only)
    progress = len(args.videos) > 1 and not args.json and not args.quiet
    failed = 0
    for path, result in predictor.predict_files(args.videos, progress=progress):
        if isinstance(result, str):
            failed += 1
            line = f"avsc predict: error: {result}"
            if progress:
                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": result}), flush=True)
            continue
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            line = f"{path}\t{result.label}\t{result.probabilities[result.label]:.4f}"
            if progress:
                tqdm.write(line, file=sys.stdout)
            else:
                print(line, flush=True)
    if failed == 0:
        return 0
    return 2 if failed == len(args.videos) else 1
