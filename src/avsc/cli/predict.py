"""``avsc predict``: classify video files with a model bundle."""

from __future__ import annotations

import argparse
import json
import sys

from avsc.cli.options import EXIT_FAILURE, add_command, add_quiet, require_tensorflow


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "predict", help="classify video files with a model bundle",
        description="Classify each video (any length, resolution, channel layout): windows of "
                    "the training clip length, features, the backbones and the fusion model; "
                    "window probabilities are averaged. Prints FILE<TAB>LABEL<TAB>PROBABILITY per "
                    "video, or one JSON object per video with --json. A video that cannot be "
                    "classified is reported on stderr (and as {\"path\", \"error\"} with --json); "
                    "the others are still classified.",
        needs_tensorflow=True,
        failure="also when any video could not be classified, or the bundle is unusable")
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (paths or s3:// URIs, decoded in place)")
    parser.add_argument("--bundle", required=True, metavar="BUNDLE_DIR",
                        help="folder written by `avsc bundle`")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line: path, label, probabilities, windows, modalities")
    parser.add_argument("--allow-visual-only", action="store_true",
                        help="classify videos without sound with the bundle's visual-only fusion model")
    add_quiet(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    require_tensorflow()
    from avsc.inference.predict import Predictor

    predictor = Predictor.load(args.bundle, allow_visual_only=args.allow_visual_only)
    progress = len(args.videos) > 1 and not args.json and not args.quiet
    failed = 0
    for path, result in predictor.predict_files(args.videos, progress=progress):
        if isinstance(result, str):
            failed += 1
            _say(f"avsc predict: error: {result}", sys.stderr, progress)
            if args.json:
                print(json.dumps({"path": path, "error": result}), flush=True)
            continue
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            _say(f"{path}\t{result.label}\t{result.probabilities[result.label]:.4f}", sys.stdout, progress)
    return EXIT_FAILURE if failed else 0


def _say(line: str, stream, progress: bool) -> None:
    """Print ``line`` without breaking the progress bar when there is one."""
    if progress:
        from tqdm import tqdm

        tqdm.write(line, file=stream)
    else:
        print(line, file=stream, flush=True)
