"""Spectrograms and frames of one clip, exactly as the feature store holds them.

Three log-compressed audio spectrograms per channel (paper, section II-A), all with
``n_bins`` (128) bins and the same time axis:

- ``mel``: librosa mel filterbank (Slaney scale and area normalisation, ``fmin`` to Nyquist)
  on the power STFT;
- ``gam``: gammatone (ERB-spaced, ``gammatone_fmin`` to Nyquist, the ``gammatone``
  package's filters) by FFT weighting: the squared magnitude response of each gammatone
  filter weights the power STFT. Scaled by Parseval's theorem, this matches the mean
  filter-output power of the package's exact (time-domain) ``gtgram`` to within a fraction
  of a dB on stationary sound, at about 1/100 of the cost: one STFT (shared with ``mel``)
  and one matrix product;
- ``cqt``: librosa constant-Q transform, ``cqt_bins_per_octave`` bins an octave from
  ``cqt_fmin``, power.

Windows are ``window_ms`` (80 ms = 2560 samples at 32 kHz) Hann windows, zero-padded to
the next power of two for the FFT (4096); hops are ``hop_ms`` (14 ms = 448 samples); frames
are centred (frame ``t`` at ``t * hop``), so a clip of ``n`` samples has ``1 + n // hop``
frames: 715 for 10 s. librosa (>= 0.10) computes the CQT at that same hop even though 448
is not a multiple of ``2 ** (octaves - 1)`` (it stops halving the hop once it is odd), so
the three spectrograms share their frames without resampling. ``AudioConfig.frames``
optionally resamples the time axis to a fixed count (e.g. 309, the paper's figure) by
averaging the power over each output frame's span.

Compression is ``log(power + log_floor)`` for all three. Deltas are not stored: the audio
models compute delta and delta-delta on the fly (:class:`avsc.models.backbones.Deltas`);
:func:`compute_deltas` is the NumPy reference of the same operation.

Filterbanks are built once per config (``functools.lru_cache`` on the frozen config).

Example::

    cfg = FeatureConfig()
    out = compute_clip_features(audio, frames, cfg)
    {name: array.shape for name, array in out.items()}
    # {'mel': (128, 715, 2), 'gam': (128, 715, 2), 'cqt': (128, 715, 2), 'frames': (20, 224, 224, 3)}
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.errors import ConfigError

SPECTROGRAMS: tuple[str, ...] = ("mel", "gam", "cqt")


# --------------------------------------------------------------------------- shapes


def stft_size(cfg: AudioConfig) -> int:
    """FFT length: the window length rounded up to a power of two (2560 -> 4096)."""
    return 1 << int(np.ceil(np.log2(max(cfg.win_length, 2))))


def native_frames(cfg: AudioConfig) -> int:
    """Frames of a clip before any resampling: ``1 + n_samples // hop_length`` (715 for 10 s)."""
    return 1 + cfg.n_samples // cfg.hop_length


def output_frames(cfg: AudioConfig) -> int:
    """Frames of a stored spectrogram: ``cfg.frames`` when set, else :func:`native_frames`."""
    return int(cfg.frames) if cfg.frames is not None else native_frames(cfg)


def frame_count(cfg: FrameConfig, seconds: float) -> int:
    """Video frames kept from ``seconds`` of video: ``round(seconds * fps)``."""
    return int(round(seconds * cfg.fps))


def check_config(config: FeatureConfig) -> None:
    """Reject settings no spectrogram or frame sampler can honour.

    Raises:
        ConfigError: naming the setting and why.
    """
    a, f = config.audio, config.frames
    nyquist = a.sample_rate / 2.0
    problems = []
    if a.sample_rate <= 0:
        problems.append(f"features.audio.sample_rate must be > 0, not {a.sample_rate}")
    if a.channels < 1:
        problems.append(f"features.audio.channels must be >= 1, not {a.channels}")
    if a.clip_seconds <= 0:
        problems.append(f"features.audio.clip_seconds must be > 0, not {a.clip_seconds}")
    if a.n_bins < 1:
        problems.append(f"features.audio.n_bins must be >= 1, not {a.n_bins}")
    if a.sample_rate > 0 and (a.win_length < 2 or a.hop_length < 1):
        problems.append(f"window {a.window_ms} ms / hop {a.hop_ms} ms are too short at {a.sample_rate} Hz")
    if a.frames is not None and a.frames < 1:
        problems.append(f"features.audio.frames must be >= 1 or unset, not {a.frames}")
    if not 0 <= a.fmin < nyquist:
        problems.append(f"features.audio.fmin {a.fmin} Hz must be in [0, {nyquist:g}) Hz")
    if not 0 < a.gammatone_fmin < nyquist:
        problems.append(f"features.audio.gammatone_fmin {a.gammatone_fmin} Hz must be in (0, {nyquist:g}) Hz")
    if a.cqt_bins_per_octave < 1 or a.cqt_fmin <= 0:
        problems.append("features.audio.cqt_fmin and cqt_bins_per_octave must be > 0")
    else:
        top = a.cqt_fmin * 2.0 ** ((a.n_bins - 1) / a.cqt_bins_per_octave)
        if top >= nyquist:
            problems.append(
                f"CQT's top bin would be {top:.0f} Hz, above Nyquist ({nyquist:g} Hz): "
                f"lower cqt_fmin or n_bins, or raise cqt_bins_per_octave"
            )
    if a.log_floor <= 0:
        problems.append(f"features.audio.log_floor must be > 0, not {a.log_floor}")
    if f.fps <= 0 or f.size < 1:
        problems.append(f"features.frames needs fps > 0 and size >= 1 (got {f.fps}, {f.size})")
    elif a.clip_seconds > 0 and frame_count(f, a.clip_seconds) < 1:
        problems.append(f"{a.clip_seconds} s at {f.fps} frames/s keeps no video frame")
    if problems:
        raise ConfigError("; ".join(problems))


def feature_shapes(config: FeatureConfig) -> dict[str, list[int]]:
    """Shape of each stored array of one clip.

    Returns:
        ``{"mel"|"gam"|"cqt": [n_bins, frames, channels], "frames": [n, size, size, 3]}``;
        for the paper preset ``[128, 715, 2]`` and ``[20, 224, 224, 3]``.

    Raises:
        ConfigError: the config is unusable (see :func:`check_config`).
    """
    check_config(config)
    a, f = config.audio, config.frames
    spec = [a.n_bins, output_frames(a), a.channels]
    shapes: dict[str, list[int]] = {name: list(spec) for name in SPECTROGRAMS}
    shapes["frames"] = [frame_count(f, a.clip_seconds), f.size, f.size, 3]
    return shapes


# --------------------------------------------------------------------------- filterbanks


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: AudioConfig) -> np.ndarray:
    """[shape=(n_bins, stft_size // 2 + 1), float32] librosa mel filters, ``fmin`` to Nyquist."""
    import librosa

    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=stft_size(cfg), n_mels=cfg.n_bins, fmin=cfg.fmin, fmax=cfg.sample_rate / 2.0
    ).astype(np.float32)


def gammatone_frequencies(cfg: AudioConfig) -> np.ndarray:
    """Centre frequencies (Hz, ascending) of the gammatone bins."""
    from gammatone.filters import erb_space

    return np.asarray(erb_space(cfg.gammatone_fmin, cfg.sample_rate / 2.0, cfg.n_bins))[::-1].copy()


@functools.lru_cache(maxsize=8)
def gammatone_weights(cfg: AudioConfig) -> np.ndarray:
    """[shape=(n_bins, stft_size // 2 + 1), float32] power weights for the gammatone bins.

    Row ``b`` is ``|H_b(f)|^2`` of the ``b``-th 4th-order ERB gammatone filter (the
    ``gammatone`` package's ``fft_weights``, bins ascending) times ``2 / (n_fft * sum(w^2))``
    for a Hann window ``w``: by Parseval's theorem ``weights @ |STFT|^2`` is then the mean
    power of the filter's output over the window, the quantity the exact ``gtgram`` squares.
    """
    import librosa
    from gammatone.fftweight import fft_weights

    n_fft = stft_size(cfg)
    magnitude, _ = fft_weights(
        n_fft, cfg.sample_rate, cfg.n_bins, 1, cfg.gammatone_fmin, cfg.sample_rate / 2.0, n_fft // 2 + 1
    )
    window = librosa.filters.get_window("hann", cfg.win_length, fftbins=True)
    scale = 2.0 / (n_fft * float(np.sum(window**2)))
    return (np.asarray(magnitude) ** 2 * scale).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _time_resampler(n_in: int, n_out: int) -> np.ndarray:
    """[shape=(n_in, n_out), float32] each output frame = mean of the input over its span.

    Output frame ``j`` covers input positions ``[j, j + 1) * n_in / n_out``; input frames
    count with the fraction of them inside that span (area resampling, no aliasing when
    shrinking; linear blending when stretching).
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    matrix = np.zeros((n_in, n_out), dtype=np.float64)
    for j in range(n_out):
        lo, hi = edges[j], edges[j + 1]
        first, last = int(np.floor(lo)), min(int(np.ceil(hi)), n_in)
        for i in range(first, last):
            matrix[i, j] = min(hi, i + 1) - max(lo, i)
    matrix /= matrix.sum(axis=0, keepdims=True)
    return matrix.astype(np.float32)


# --------------------------------------------------------------------------- arrays


def _channels_first(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[shape=(channels, n_samples), float32] from [samples] or [samples, channels], padded/cropped."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples] or [samples, channels], got shape {audio.shape}")
    n = cfg.n_samples
    if len(audio) != n:
        fitted = np.zeros((n, audio.shape[1]), dtype=np.float32)
        fitted[: min(n, len(audio))] = audio[:n]
        audio = fitted
    return np.ascontiguousarray(audio.T)


def _fit_frames(power: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Crop/pad (edge) the last axis to the native count, then resample to ``cfg.frames``."""
    n = native_frames(cfg)
    if power.shape[-1] > n:
        power = power[..., :n]
    elif power.shape[-1] < n:
        pad = [(0, 0)] * (power.ndim - 1) + [(0, n - power.shape[-1])]
        power = np.pad(power, pad, mode="edge")
    if cfg.frames is not None and cfg.frames != n:
        power = power @ _time_resampler(n, int(cfg.frames))
    return power


def _finish(power: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[channels, bins, T] power -> [bins, T', channels] float32 log-power."""
    power = _fit_frames(np.asarray(power, dtype=np.float32), cfg)
    return np.ascontiguousarray(np.log(power + np.float32(cfg.log_floor)).transpose(1, 2, 0))


def power_stft(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[shape=(channels, stft_size // 2 + 1, native_frames), float32] centred Hann power STFT."""
    import librosa

    y = _channels_first(audio, cfg)
    spec = librosa.stft(
        y, n_fft=stft_size(cfg), hop_length=cfg.hop_length, win_length=cfg.win_length, window="hann", center=True
    )
    return spec.real**2 + spec.imag**2


def compute_mel(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log mel spectrogram.

    Args:
        audio: [shape=(samples, channels)] or [shape=(samples,)] float audio at
            ``cfg.sample_rate``; padded/cropped to ``cfg.clip_seconds``.

    Returns:
        [shape=(n_bins, frames, channels), float32] ``log(mel power + log_floor)``.
    """
    return _finish(mel_filterbank(cfg) @ power_stft(audio, cfg), cfg)


def compute_gammatone(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log gammatone spectrogram by FFT weighting (see :func:`gammatone_weights`).

    Returns:
        [shape=(n_bins, frames, channels), float32], bins ascending from ``gammatone_fmin``.
    """
    return _finish(gammatone_weights(cfg) @ power_stft(audio, cfg), cfg)


def compute_cqt(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log constant-Q power spectrogram (librosa), ``n_bins`` bins from ``cqt_fmin``.

    Returns:
        [shape=(n_bins, frames, channels), float32].
    """
    import librosa

    y = _channels_first(audio, cfg)
    with warnings.catch_warnings():
        # Short clips: the lowest octaves run on a signal downsampled below one FFT length;
        # librosa zero-pads it, which is what we want.
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        spec = librosa.cqt(
            y,
            sr=cfg.sample_rate,
            hop_length=cfg.hop_length,
            fmin=cfg.cqt_fmin,
            n_bins=cfg.n_bins,
            bins_per_octave=cfg.cqt_bins_per_octave,
        )
    return _finish(spec.real**2 + spec.imag**2, cfg)


def compute_clip_features(audio: np.ndarray, frames: np.ndarray | None, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Everything the store keeps for one clip.

    The STFT is computed once and shared by ``mel`` and ``gam``.

    Args:
        audio: [shape=(samples, channels), float32] at ``config.audio.sample_rate`` (as
            :func:`avsc.media.decode.demux_audio` returns it); padded/cropped to the clip length.
        frames: [shape=(n, size, size, 3), uint8] (as :func:`avsc.media.decode.sample_frames`
            returns it), or None to compute the spectrograms only.
        config: the feature config.

    Returns:
        ``{"mel", "gam", "cqt"}``: [shape=(n_bins, frames, channels), float32] log power;
        ``"frames"``: the frames, uint8 (when given). Shapes equal :func:`feature_shapes`.

    Raises:
        ValueError: the audio's channel count or the frames' shape do not match the config.
    """
    cfg = config.audio
    audio = np.asarray(audio)
    channels = 1 if audio.ndim == 1 else audio.shape[-1]
    if channels != cfg.channels:
        raise ValueError(f"audio has {channels} channel(s), the config asks for {cfg.channels}")
    power = power_stft(audio, cfg)
    out = {
        "mel": _finish(mel_filterbank(cfg) @ power, cfg),
        "gam": _finish(gammatone_weights(cfg) @ power, cfg),
        "cqt": compute_cqt(audio, cfg),
    }
    if frames is not None:
        frames = np.asarray(frames)
        expected = (frame_count(config.frames, cfg.clip_seconds), config.frames.size, config.frames.size, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 {expected}, got {frames.dtype} {frames.shape}")
        out["frames"] = frames
    return out


def compute_deltas(spec: np.ndarray) -> np.ndarray:
    """Reference for the models' on-the-fly deltas: ``[x, delta, delta-delta]`` on channels.

    ``delta`` is librosa's 3-point delta (``(x[t+1] - x[t-1]) / 2``), delta-delta the
    delta of the delta; two frames each side, where the 3-point formula has no
    neighbours, are cut, exactly as :class:`avsc.models.backbones.Deltas` does.

    Args:
        spec: [shape=(n_bins, frames, channels)] a stored spectrogram.

    Returns:
        [shape=(n_bins, frames - 4, 3 * channels), float32]: channels ``x_0..x_C-1``,
        ``delta_0..``, ``delta_delta_0..``.
    """
    import librosa

    spec = np.asarray(spec, dtype=np.float32)
    if spec.ndim != 3 or spec.shape[1] < 5:
        raise ValueError(f"spec must be [bins, frames >= 5, channels], got shape {spec.shape}")
    delta = librosa.feature.delta(spec, width=3, order=1, axis=1, mode="interp")
    delta2 = librosa.feature.delta(delta, width=3, order=1, axis=1, mode="interp")
    return np.concatenate([spec[:, 2:-2], delta[:, 2:-2], delta2[:, 2:-2]], axis=-1).astype(np.float32)
