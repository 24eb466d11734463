"""``avsc predict``: classify video files with a model bundle."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from avsc.cli.options import EXIT_FAILURE, add_command, add_quiet, require_tensorflow


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "predict",
        help="classify video files with a model bundle",
        description="Classify each video (any length, resolution, channel layout): windows of "
        "the training clip length, features, the backbones and the fusion model; "
        "window probabilities are averaged. Prints FILE<TAB>LABEL<TAB>PROBABILITY per "
        "video, or one JSON object per video with --json. A video that cannot be "
        'classified is reported on stderr (and as {"path", "error"} with --json); '
        "the others are still classified.",
        needs_tensorflow=True,
        failure="also when any video could not be classified, or the bundle is unusable",
    )
    parser.add_argument(
        "videos", nargs="+", metavar="VIDEO", help="video files (paths or s3:// URIs, decoded in place)"
    )
    parser.add_argument("--bundle", required=True, metavar="BUNDLE_DIR", help="folder written by `avsc bundle`")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line: path, label, probabilities, windows, modalities"
    )
    parser.add_argument(
        "--allow-visual-only",
        action="store_true",
        help="classify videos without sound with the bundle's visual-only fusion model",
    )
    add_quiet(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.inference.bundle import check_bundle_location
    from avsc.inference.predict import check_videos

    require_tensorflow()  # installed at all? (a lookup; loading it comes after the inputs)

    # The inputs first (a second), the models after (10-40 s): a missing file, a folder, a
    # text file named .mp4 or an s3:// URL without credentials fails at once.
    check_bundle_location(args.bundle)
    problems = check_videos(args.videos)
    if len(problems) == len(args.videos):
        for path in args.videos:
            _report_failure(path, problems[path], args, progress=False)
        return EXIT_FAILURE
    # A video brought to predict has no dataset WAV beside it: its own track is the sound,
    # whatever data.audio_source the models were trained with.
    logging.getLogger(__name__).info(
        "sound: each video's own audio track (a dataset's separate WAV files "
        "are read in training only, per data.audio_source)"
    )
    require_tensorflow(load=True, verbose=args.verbose)
    from avsc.inference.predict import Predictor
    from avsc.runtime import limit_tensorflow_threads

    limit_tensorflow_threads()  # the usable CPUs, not the node's, before the models load

    predictor = Predictor.load(args.bundle, allow_visual_only=args.allow_visual_only)
    progress = len(args.videos) > 1 and not args.json and not args.quiet
    failed = 0
    for path, result in _in_order(args.videos, problems, predictor, progress):
        if isinstance(result, str):
            failed += 1
            _report_failure(path, result, args, progress)
            continue
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            _say(f"{path}\t{result.label}\t{result.probabilities[result.label]:.4f}", sys.stdout, progress)
    return EXIT_FAILURE if failed else 0


def _in_order(videos: list[str], problems: dict[str, str], predictor, progress: bool):
    """``(path, Prediction | message)`` for every video in the given order: the ones that
    failed the input check with their message, the others classified."""
    results = predictor.predict_files([v for v in videos if v not in problems], progress=progress)
    for path in videos:
        yield (path, problems[path]) if path in problems else next(results)


def _report_failure(path: str, message: str, args: argparse.Namespace, progress: bool) -> None:
    _say(f"avsc predict: error: {message}", sys.stderr, progress)
    if args.json:
        print(json.dumps({"path": path, "error": message}), flush=True)


def _say(line: str, stream, progress: bool) -> None:
    """Print ``line`` without breaking the progress bar when there is one."""
    if progress:
        from tqdm import tqdm

        tqdm.write(line, file=stream)
    else:
        print(line, file=stream, flush=True)
