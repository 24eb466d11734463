"""``avsc inspect``: write what preprocessing and prediction feed the networks for one video."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``inspect``."""
    parser = subparsers.add_parser(
        "inspect", help="write the frames, sound and spectrograms the networks get for one video",
        description="Decode VIDEO exactly as preprocessing and `avsc predict` do and write, per window of "
                    "the clip length: each sampled frame as a PNG named by its instant, the decoded sound "
                    "as a WAV, each spectrogram as an image; plus media.json with the probed facts (streams, "
                    "chosen audio track, displayed size, duration, start times), what preprocessing would "
                    "do with the file, and any warnings. Exit status: 0 written, 1 the video or settings "
                    "are unusable, 2 usage error.")
    parser.add_argument("video", metavar="VIDEO", help="the video file")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="output folder (new, empty, or an earlier `avsc inspect` output)")
    parser.add_argument("--preset", default="paper", choices=("paper", "quick"),
                        help="base feature settings: paper (10 s, 224x224) or quick (4 s, 96x96); default paper")
    parser.add_argument("--config", metavar="FILE", help="JSON/TOML settings file (features.audio, features.frames)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. features.frames.fps=4 (repeatable; default: none)")
    parser.add_argument("--bundle", metavar="BUNDLE_DIR",
                        help="use this model bundle's feature settings instead (what `avsc predict --bundle` sees)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from avsc.config import load_config
    from avsc.inference.inspect import inspect_media

    if args.bundle:
        from avsc.inference.bundle import load_bundle

        config = load_bundle(args.bundle, verify=False).feature_config
    else:
        config = load_config(args.config, preset=args.preset, overrides=args.set).features
    result = inspect_media(args.video, args.output, config, progress=not args.quiet)
    info = result.info
    frames = sum(len(w["frames"]) for w in result.windows)
    track = "none" if info["audio_track"] is None else f"{info['audio_track']} of {info['audio_tracks']}"
    print(f"{args.video}: {info['width']}x{info['height']} displayed, {info['duration_s']:.2f} s, "
          f"audio track {track}; {len(result.windows)} window(s), {frames} frames -> {result.out_dir}")
    print(f"  preprocessing: {result.preprocess}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0
