"""Spectrograms and shapes: synthetic signals whose right answer is known."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest

from avsc.config import AudioConfig, FeatureConfig, FrameConfig, load_config
from avsc.errors import ConfigError
from avsc.features.spectrograms import (
    check_config,
    compute_clip_features,
    compute_cqt,
    compute_deltas,
    compute_gammatone,
    compute_mel,
    feature_shapes,
    gammatone_frequencies,
    gammatone_weights,
    mel_filterbank,
    native_frames,
    stft_size,
)

SHORT = AudioConfig(clip_seconds=1.0)


def tone(freq: float, cfg: AudioConfig, channels: int = 2, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(cfg.n_samples) / cfg.sample_rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def peak_bin(spec: np.ndarray) -> int:
    """Bin with the most energy, over the middle frames of channel 0."""
    frames = spec.shape[1]
    return int(np.argmax(spec[:, frames // 4 : 3 * frames // 4, 0].mean(axis=1)))


@pytest.mark.parametrize("k", [10, 40, 75, 110])
def test_tone_peaks_in_its_mel_bin(k):
    # Mel filter k is centred on the (k+1)-th of n_bins + 2 mel-spaced frequencies.
    centres = librosa.mel_frequencies(SHORT.n_bins + 2, fmin=SHORT.fmin, fmax=SHORT.sample_rate / 2)[1:-1]
    spec = compute_mel(tone(centres[k], SHORT), SHORT)
    assert peak_bin(spec) == k


@pytest.mark.parametrize("k", [5, 30, 64, 100, 127])
def test_tone_peaks_in_its_cqt_bin(k):
    centres = librosa.cqt_frequencies(SHORT.n_bins, fmin=SHORT.cqt_fmin, bins_per_octave=SHORT.cqt_bins_per_octave)
    spec = compute_cqt(tone(centres[k], SHORT), SHORT)
    assert peak_bin(spec) == k


@pytest.mark.parametrize("k", [20, 64, 120])
def test_tone_peaks_in_its_gammatone_bin(k):
    centres = gammatone_frequencies(SHORT)
    assert np.all(np.diff(centres) > 0)
    spec = compute_gammatone(tone(centres[k], SHORT), SHORT)
    assert peak_bin(spec) == k


def test_mel_matches_librosa_melspectrogram(rng):
    audio = (0.1 * rng.standard_normal((SHORT.n_samples, 2))).astype(np.float32)
    ours = compute_mel(audio, SHORT)
    for channel in range(2):
        reference = librosa.feature.melspectrogram(
            y=audio[:, channel],
            sr=SHORT.sample_rate,
            n_fft=stft_size(SHORT),
            hop_length=SHORT.hop_length,
            win_length=SHORT.win_length,
            n_mels=SHORT.n_bins,
            fmin=SHORT.fmin,
            power=2.0,
        )
        np.testing.assert_allclose(ours[:, :, channel], np.log(reference + SHORT.log_floor), atol=1e-3)


def test_fast_gammatone_agrees_with_exact_gtgram(rng):
    from gammatone.gtgram import gtgram

    cfg = AudioConfig(clip_seconds=0.5, n_bins=32)
    t = np.arange(cfg.n_samples) / cfg.sample_rate
    wave = (
        0.05 * rng.standard_normal(cfg.n_samples)
        + 0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * 3000 * t)
    )
    exact = gtgram(wave, cfg.sample_rate, cfg.window_ms / 1000, cfg.hop_ms / 1000, cfg.n_bins, cfg.gammatone_fmin)
    fast = compute_gammatone(wave[:, None], cfg)[:, 4:-4, 0]  # away from the zero-padded edges
    # Both describe stationary sound: compare mean power per band, in dB.
    exact_db = 10 * np.log10((exact**2).mean(axis=1))
    fast_db = 10 * np.log10(np.exp(fast).mean(axis=1))
    difference = np.abs(fast_db - exact_db)
    assert np.median(difference) < 0.25
    assert difference.max() < 1.5
    assert np.argmax(fast_db) == np.argmax(exact_db)


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        load_config(preset="quick").features,
        FeatureConfig(audio=AudioConfig(clip_seconds=3.0, frames=100), frames=FrameConfig(fps=1.5, size=40)),
    ],
    ids=["paper", "quick", "resampled"],
)
def test_feature_shapes_match_computed(config, rng):
    shapes = feature_shapes(config)
    audio = (0.1 * rng.standard_normal((config.audio.n_samples, config.audio.channels))).astype(np.float32)
    frames = np.zeros(shapes["frames"], np.uint8)
    out = compute_clip_features(audio, frames, config)
    assert {name: list(array.shape) for name, array in out.items()} == shapes
    for name in ("mel", "gam", "cqt"):
        assert out[name].dtype == np.float32
        assert np.all(np.isfinite(out[name]))


def test_paper_shapes_are_715_frames_and_20_images():
    shapes = feature_shapes(FeatureConfig())
    assert shapes["mel"] == [128, 715, 2]
    assert shapes["frames"] == [20, 224, 224, 3]
    paper_309 = FeatureConfig(audio=AudioConfig(frames=309))
    assert feature_shapes(paper_309)["cqt"] == [128, 309, 2]


def test_time_resampling_keeps_a_steady_level(rng):
    cfg = dataclasses.replace(SHORT, frames=17)
    audio = tone(1000.0, SHORT)
    native = compute_mel(audio, SHORT)
    resampled = compute_mel(audio, cfg)
    assert resampled.shape == (128, 17, 2)
    middle = slice(3, -3)
    peak = peak_bin(native)
    assert peak_bin(resampled) == peak
    np.testing.assert_allclose(resampled[peak, middle, 0], native[peak, 10:-10, 0].mean(), atol=0.05)


def test_audio_is_fitted_to_the_clip_length():
    short = tone(500.0, SHORT)[: SHORT.n_samples // 2]
    out = compute_mel(short, SHORT)
    assert out.shape == (128, native_frames(SHORT), 2)
    # The padded second half is silence: the floor of the log.
    assert np.allclose(out[:, -5:, :], np.log(SHORT.log_floor), atol=1e-3)


def test_clip_features_reject_mismatched_inputs(rng):
    config = FeatureConfig(audio=SHORT, frames=FrameConfig(size=16))
    mono = rng.standard_normal((SHORT.n_samples, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="channel"):
        compute_clip_features(mono, None, config)
    stereo = np.repeat(mono, 2, axis=1)
    with pytest.raises(ValueError, match="frames"):
        compute_clip_features(stereo, np.zeros((2, 8, 8, 3), np.uint8), config)
    assert set(compute_clip_features(stereo, None, config)) == {"mel", "gam", "cqt"}


def test_check_config_rejects_impossible_settings():
    with pytest.raises(ConfigError, match="Nyquist"):
        check_config(FeatureConfig(audio=AudioConfig(n_bins=200)))
    with pytest.raises(ConfigError, match="clip_seconds"):
        check_config(FeatureConfig(audio=AudioConfig(clip_seconds=0.0)))
    with pytest.raises(ConfigError, match="frames"):
        feature_shapes(FeatureConfig(frames=FrameConfig(fps=0.0)))


def test_filterbanks_are_cached_per_config():
    assert mel_filterbank(SHORT) is mel_filterbank(AudioConfig(clip_seconds=1.0))
    assert gammatone_weights(SHORT) is not gammatone_weights(dataclasses.replace(SHORT, n_bins=64))
    assert gammatone_weights(SHORT).shape == (128, stft_size(SHORT) // 2 + 1)


def test_deltas_of_a_ramp_are_its_slope():
    frames = np.arange(12, dtype=np.float32)
    spec = np.stack([np.broadcast_to(3.0 * frames, (4, 12)), np.broadcast_to(-frames, (4, 12))], axis=-1)
    out = compute_deltas(spec)
    assert out.shape == (4, 8, 6)
    np.testing.assert_allclose(out[..., :2], spec[:, 2:-2, :])
    np.testing.assert_allclose(out[..., 2], 3.0)
    np.testing.assert_allclose(out[..., 3], -1.0)
    np.testing.assert_allclose(out[..., 4:], 0.0, atol=1e-6)


def test_model_deltas_layer_matches_reference(rng):
    from avsc.models.backbones import Deltas

    spec = rng.standard_normal((16, 30, 2)).astype(np.float32)
    layer_out = np.asarray(Deltas()(spec[None]))[0]
    np.testing.assert_allclose(layer_out, compute_deltas(spec), atol=1e-5)
