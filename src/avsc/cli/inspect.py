"""``avsc inspect``: write what preprocessing and prediction feed the networks for one video."""

from __future__ import annotations

import argparse

from avsc.cli.options import add_command, add_quiet, add_settings_options, resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "inspect",
        help="write the frames, sound and spectrograms the networks get for one video",
        description="Decode VIDEO exactly as preprocessing and `avsc predict` do and write, per window of "
        "the clip length (window 0 is the clip preprocessing stores): each sampled frame as a "
        "PNG named by its instant, the decoded sound as a WAV, each spectrogram as an image; "
        "plus media.json with the probed facts (streams, chosen audio track, displayed size, "
        "duration, start times), what preprocessing would do with the file, and any warnings.",
        failure="also when the video cannot be read, or the output folder is not one inspect may write",
    )
    parser.add_argument("video", metavar="VIDEO", help="the video file")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="output folder: new, empty, or an earlier `avsc inspect` output (replaced)",
    )
    parser.add_argument(
        "--bundle",
        metavar="BUNDLE_DIR",
        help="take the feature settings of this model bundle, i.e. what `avsc predict "
        "--bundle` sees, instead of --preset/--config/--set (default: none)",
    )
    add_quiet(parser)
    add_settings_options(parser, sections="features.audio, features.frames")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.errors import ConfigError
    from avsc.inference.inspect import inspect_media

    if args.bundle:
        from avsc.inference.bundle import load_bundle

        if args.config or args.overrides:
            raise ConfigError("give --bundle or --config/--set, not both: a bundle fixes its feature settings")
        config = load_bundle(args.bundle, verify=False).feature_config
    else:
        config = resolve_config(args).features
    result = inspect_media(args.video, args.output, config, progress=not args.quiet)
    info = result.info
    frames = sum(len(w["frames"]) for w in result.windows)
    track = "none" if info["audio_track"] is None else f"{info['audio_track']} of {info['audio_tracks']}"
    print(
        f"{args.video}: {info['width']}x{info['height']} displayed, {info['duration_s']:.2f} s, "
        f"audio track {track}; {len(result.windows)} window(s), {frames} frames -> {result.out_dir}"
    )
    print(f"  preprocessing: {result.preprocess}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0
