"""What the networks see of one video: ``avsc inspect``.

:func:`inspect_media` decodes a video exactly as preprocessing and prediction do -- the
same probe (:func:`avsc.media.probe.probe_media`), the same windows
(:func:`avsc.inference.windows.window_offsets`), the same decoders
(:func:`avsc.media.decode.demux_audio`, :func:`avsc.media.decode.sample_frames`) and the
same spectrograms (:func:`avsc.features.spectrograms.compute_clip_features`) -- and writes
what comes out, so a user can see why a video was classified as it was:

```
OUT/
  media.json                       probed facts, chosen streams, windows, warnings
  window-00-at-0.000s/
    frame-000-t0.000s.png          each sampled frame (size x size RGB), named by its instant
    ...
    audio.wav                      the decoded sound (32-bit float, the configured rate)
    mel.png  gam.png  cqt.png      each spectrogram, one panel per channel
  window-01-at-10.000s/ ...
```

Window 0 is also the clip preprocessing stores for a dataset video (the first
``clip_seconds``). ``media.json`` says for it whether preprocessing would keep or
reject the clip, and for every window whether its sound is digital silence (prediction
then leaves it out).

Example::

    result = inspect_media("street.mp4", "street-inspect", load_config(preset="quick").features)
    result.windows[0]["frames"][:2]
    # ['window-00-at-0.000s/frame-000-t0.000s.png', 'window-00-at-0.000s/frame-001-t0.500s.png']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import FeatureConfig, config_hash, to_dict
from avsc.errors import DataError, MediaError
from avsc.media.probe import MediaInfo
from avsc.storage.files import atomic_path
from avsc.storage.locations import write_json

log = logging.getLogger(__name__)

_MARKER = "media.json"
_SPECTROGRAMS = ("mel", "gam", "cqt")


@dataclass(frozen=True)
class InspectResult:
    """What :func:`inspect_media` wrote.

    Attributes:
        out_dir: the output folder.
        info: the probe, as a dict (:meth:`avsc.media.probe.MediaInfo.to_dict`).
        windows: per window: ``offset_s``, ``folder``, ``frames`` (PNG paths relative to
            ``out_dir``), ``frame_times_s``, ``audio`` (WAV path or None), ``silent``,
            ``spectrograms`` (name -> PNG path), ``audio_error`` (or None).
        warnings: the probe's warnings and any found while decoding.
        preprocess: what preprocessing would do with the file (``kept`` or the reason).
    """

    out_dir: Path | str
    info: dict[str, Any]
    windows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preprocess: str = ""


def inspect_media(
    path: str | Path, out_dir: str | Path, config: FeatureConfig, *, progress: bool = False
) -> InspectResult:
    """Write the frames, sound, spectrograms and probed facts the networks get for a video.

    Args:
        path: the video file (a path or an ``s3://`` URI).
        out_dir: folder to write (created; an existing one must be empty or an earlier
            ``avsc inspect`` output, which is replaced). Written atomically; an ``s3://``
            prefix gets the files uploaded.
        config: the feature settings (a preset, a bundle's, or a preprocessing run's).
        progress: show a progress bar over the windows.

    Returns:
        An :class:`InspectResult`.

    Raises:
        MediaError: the file cannot be read or has no picture (names the file).
        DataError: ``out_dir`` is a non-empty folder that ``avsc inspect`` did not write.
    """
    from tqdm import tqdm

    from avsc.inference.windows import window_offsets
    from avsc.media.ffmpeg import media_path
    from avsc.media.probe import probe_media
    from avsc.storage import locations, staging

    if locations.is_remote(str(out_dir)):  # written locally, then uploaded
        from dataclasses import replace

        with staging.output_folder(out_dir) as local:
            return replace(inspect_media(path, local, config, progress=progress), out_dir=str(out_dir))
    path, out_dir = media_path(path), Path(out_dir)  # the video may be an s3:// URI, read in place
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file())):
        raise DataError(
            out_dir, "exists and is not an empty folder or an earlier `avsc inspect` output", "give a new folder"
        )
    info = probe_media(path)
    clip = config.audio.clip_seconds
    offsets = window_offsets(info.duration_s, clip)
    warnings = list(info.warnings)
    windows: list[dict[str, Any]] = []
    preprocess = "kept"
    if not info.has_audio:
        preprocess = "rejected: no audio stream"
        warnings.append("no audio track: prediction needs --allow-visual-only and a visual-only fusion model")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for k, offset in enumerate(tqdm(offsets, desc="inspect", unit="window", disable=not progress)):
            window = _write_window(tmp, k, offset, path, info, config)
            if window["audio_error"] is not None and k == 0:
                preprocess = f"rejected: {window['audio_error']}"
            if window["silent"]:
                warnings.append(
                    f"window at {offset:g} s: the sound is digital silence "
                    "(prediction leaves it out; preprocessing rejects such a clip)"
                )
                if k == 0:
                    preprocess = "rejected: the sound is digital silence"
            windows.append(window)
        facts = {
            "file": str(path),
            "media": info.to_dict(),
            "feature_config": to_dict(config),
            "feature_config_hash": config_hash(config),
            "clip_seconds": clip,
            "windows": windows,
            "preprocess": preprocess,
            "warnings": warnings,
        }
        write_json(tmp / _MARKER, facts)
    return InspectResult(
        out_dir=out_dir, info=info.to_dict(), windows=windows, warnings=warnings, preprocess=preprocess
    )


def _write_window(
    tmp: Path, k: int, offset: float, path: str | Path, info: MediaInfo, config: FeatureConfig
) -> dict[str, Any]:
    """Write window ``k``'s frames, sound and spectrograms under ``tmp``; its entry of ``media.json``."""
    from avsc.media.decode import demux_audio, is_silent, sample_frames

    clip = config.audio.clip_seconds
    folder = f"window-{k:02d}-at-{offset:.3f}s"
    (tmp / folder).mkdir()
    frames = sample_frames(path, config.frames, seconds=clip, offset_s=offset, info=info)
    times = [round(offset + i / config.frames.fps, 6) for i in range(len(frames))]
    names = [f"{folder}/frame-{i:03d}-t{t:.3f}s.png" for i, t in enumerate(times)]
    for name, frame in zip(names, frames, strict=True):
        _write_png(tmp / name, frame)
    window: dict[str, Any] = {
        "offset_s": offset,
        "folder": folder,
        "frames": names,
        "frame_times_s": times,
        "audio": None,
        "silent": None,
        "spectrograms": {},
        "audio_error": None,
    }
    if info.has_audio:
        try:
            audio = demux_audio(path, config.audio, offset_s=offset, duration_s=clip, info=info)
        except MediaError as exc:
            window["audio_error"] = exc.problem
        else:
            window.update(_write_sound(tmp, folder, audio, offset, config))
            window["silent"] = is_silent(audio)
    return window


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image)).save(path)


def _write_sound(tmp: Path, folder: str, audio: np.ndarray, offset: float, config: FeatureConfig) -> dict:
    """The window's WAV and spectrogram images; returns their paths (relative to the output)."""
    import soundfile

    from avsc.features.spectrograms import compute_clip_features

    wav = f"{folder}/audio.wav"
    soundfile.write(tmp / wav, audio, config.audio.sample_rate, subtype="FLOAT")
    features = compute_clip_features(audio, None, config)
    images = {}
    for name in _SPECTROGRAMS:
        images[name] = f"{folder}/{name}.png"
        _plot_spectrogram(tmp / images[name], features[name], name, offset, config)
    return {"audio": wav, "spectrograms": images}


def _plot_spectrogram(path: Path, spec: np.ndarray, name: str, offset: float, config: FeatureConfig) -> None:
    """One panel per channel of a [shape=(bins, frames, channels)] log spectrogram."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    channels = spec.shape[-1]
    figure = Figure(figsize=(8, 2.2 * channels), layout="constrained")
    axes = figure.subplots(channels, 1, squeeze=False)[:, 0]
    extent = (offset, offset + config.audio.clip_seconds, 0, spec.shape[0])
    for channel, ax in enumerate(axes):
        image = ax.imshow(spec[:, :, channel], origin="lower", aspect="auto", extent=extent, cmap="magma")
        ax.set_ylabel(f"{name} bin (ch {channel})")
        figure.colorbar(image, ax=ax, label="log power")
    axes[-1].set_xlabel("time in the video (s)")
    axes[0].set_title(f"{name}: {spec.shape[0]} bins x {spec.shape[1]} frames x {channels} channels")
    figure.savefig(path, dpi=100)
