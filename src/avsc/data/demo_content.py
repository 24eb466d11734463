"""The demo dataset's sounds and pictures: scene signatures, location nuisance, clip noise.

Each scene has a sound (noise band, tones, modulation, bursts) and a picture (colour
layout, stripes, moving shapes) drawn from the tables below. Some scenes share their sound
and differ only by a cue that half their clips carry while their pictures differ; others
share their picture and differ only by a cue in half their clips while their sounds differ
(:mod:`avsc.data.demo` lists which). Each recording location adds its own nuisance and each
clip its own noise.

Example:
    >>> import numpy as np
    >>> audio = synth_audio("bus", 0.5, 16000, np.random.default_rng(0), np.random.default_rng(1))
    >>> audio.shape, audio.dtype.name, bool(np.abs(audio).max() <= 1)
    ((8000, 2), 'float32', True)
"""

from __future__ import annotations

import numpy as np

from avsc.labels import LABELS

__all__ = ["synth_audio", "synth_frames"]

# Audio signatures: scenes that share a key sound alike (bar a faint per-scene cue).
_AUDIO_GROUP: dict[str, str] = {
    "airport": "hall",
    "shopping_mall": "hall",
    "bus": "vehicle",
    "tram": "vehicle",
    "public_square": "crowd",
    "street_pedestrian": "crowd",
    "metro": "tunnel",
    "metro_station": "platform",
    "park": "birds",
    "street_traffic": "cars",
}
# band: noise band in Hz; tones: steady tones in Hz; am_hz: slow loudness modulation;
# bursts_per_s: short loud events (steps, chirps, passing cars).
_AUDIO_SIGNATURES: dict[str, dict] = {
    "hall": {"band": (300.0, 1200.0), "tones": (523.0, 1568.0), "am_hz": 0.0, "bursts_per_s": 0.5},
    "vehicle": {"band": (60.0, 400.0), "tones": (98.0, 196.0), "am_hz": 1.5, "bursts_per_s": 0.0},
    "crowd": {"band": (900.0, 3500.0), "tones": (), "am_hz": 4.0, "bursts_per_s": 3.0},
    "tunnel": {"band": (120.0, 800.0), "tones": (2900.0,), "am_hz": 0.3, "bursts_per_s": 0.0},
    "platform": {"band": (450.0, 2200.0), "tones": (740.0,), "am_hz": 0.0, "bursts_per_s": 1.0},
    "birds": {"band": (3000.0, 9000.0), "tones": (4200.0, 6100.0), "am_hz": 7.0, "bursts_per_s": 4.0},
    "cars": {"band": (60.0, 3000.0), "tones": (), "am_hz": 0.2, "bursts_per_s": 0.7},
}
# Visual signatures: scenes that share a key look alike (bar a faint per-scene cue).
_VISUAL_GROUP: dict[str, str] = {
    "metro": "underground",
    "metro_station": "underground",
    "airport": "interior",
    "bus": "interior",
    "park": "green",
    "public_square": "green",
    "street_traffic": "road",
    "tram": "road",
    "shopping_mall": "shops",
    "street_pedestrian": "facade",
}
# top/bottom: RGB of the upper and lower part; horizon: where they meet (fraction of
# height); stripes: (angle in degrees, cycles across the width, contrast); shapes: count,
# RGB, radius (fraction of height), speed (fraction of width per second).
_VISUAL_SIGNATURES: dict[str, dict] = {
    "underground": {
        "top": (40, 45, 70),
        "bottom": (110, 110, 115),
        "horizon": 0.35,
        "stripes": (0.0, 6.0, 30.0),
        "shapes": (2, (230, 220, 120), 0.08, 0.05),
    },
    "interior": {
        "top": (200, 205, 215),
        "bottom": (170, 150, 120),
        "horizon": 0.55,
        "stripes": (90.0, 8.0, 35.0),
        "shapes": (4, (60, 60, 160), 0.07, 0.15),
    },
    "green": {
        "top": (120, 175, 235),
        "bottom": (70, 150, 60),
        "horizon": 0.45,
        "stripes": (60.0, 3.0, 15.0),
        "shapes": (3, (240, 240, 240), 0.05, 0.08),
    },
    "road": {
        "top": (150, 170, 195),
        "bottom": (70, 70, 75),
        "horizon": 0.5,
        "stripes": (135.0, 4.0, 40.0),
        "shapes": (3, (200, 40, 40), 0.12, 0.4),
    },
    "shops": {
        "top": (230, 180, 120),
        "bottom": (200, 200, 190),
        "horizon": 0.3,
        "stripes": (90.0, 14.0, 45.0),
        "shapes": (5, (240, 120, 180), 0.06, 0.1),
    },
    "facade": {
        "top": (185, 120, 90),
        "bottom": (160, 155, 145),
        "horizon": 0.7,
        "stripes": (0.0, 10.0, 35.0),
        "shapes": (6, (30, 30, 30), 0.05, 0.12),
    },
}
# Faint per-scene cues that separate scenes sharing a signature: a tone (Hz) and a patch
# (centre x, centre y as fractions, RGB).
_CUE_RATE = 0.5  # share of clips that carry their scene's cue
_AUDIO_CUE_HZ: dict[str, float] = {label: 1800.0 * 1.19**i for i, label in enumerate(LABELS)}
_VISUAL_CUE: dict[str, tuple[float, float, tuple[int, int, int]]] = {
    label: (
        (0.15 + 0.7 * ((i * 3) % 10) / 9),
        (0.2 + 0.6 * ((i * 7) % 10) / 9),
        ((i * 80) % 256, (i * 140 + 60) % 256, (i * 200 + 120) % 256),
    )
    for i, label in enumerate(LABELS)
}


def synth_audio(
    label: str, seconds: float, sample_rate: int, rng: np.random.Generator, loc_rng: np.random.Generator
) -> np.ndarray:
    """One clip's sound [shape=(samples, 2), float in -1..1].

    The scene's signature (its group's band, tones, modulation and bursts) plus a faint
    scene cue, coloured by the location (gain, hum, tilt, balance) and per-clip noise.
    """
    sig = _AUDIO_SIGNATURES[_AUDIO_GROUP[label]]
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)

    # Location nuisance, fixed for every clip recorded there.
    gain = 10 ** (loc_rng.uniform(-6, 6) / 20)
    hum_hz = loc_rng.choice([50.0, 60.0])
    hum_level = loc_rng.uniform(0.0, 0.08)
    tilt = loc_rng.uniform(-0.5, 0.5)  # spectral slope, in decades of gain per decade of frequency
    balance = loc_rng.uniform(-0.3, 0.3)

    # Band noise, shaped in the frequency domain (smooth edges, with the location's tilt).
    lo, hi = (edge * rng.uniform(0.9, 1.1) for edge in sig["band"])
    log_f = np.log10(np.maximum(freqs, 1.0))
    centre, half_width = (np.log10(lo) + np.log10(hi)) / 2, (np.log10(hi) - np.log10(lo)) / 2
    shape = np.exp(-0.5 * ((log_f - centre) / max(half_width, 0.05)) ** 4)
    shape *= 10 ** (tilt * (log_f - 3.0))
    shape[0] = 0.0
    spectrum = np.fft.rfft(rng.standard_normal((n, 2)), axis=0) * shape[:, None]
    band = np.fft.irfft(spectrum, n=n, axis=0)
    band /= np.std(band) + 1e-9

    signal = 0.5 * band
    if sig["am_hz"] > 0:
        depth = rng.uniform(0.4, 0.8)
        signal *= (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * sig["am_hz"] * t + rng.uniform(0, 2 * np.pi)))[
            :, None
        ]
    for f in sig["tones"]:
        f *= rng.uniform(0.97, 1.03)
        signal += rng.uniform(0.15, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))[:, None]
    n_bursts = rng.poisson(sig["bursts_per_s"] * seconds)
    burst_len = int(0.08 * sample_rate)
    for _ in range(n_bursts):
        start = rng.integers(0, max(1, n - burst_len))
        envelope = np.hanning(burst_len)[:, None] * rng.uniform(1.0, 2.5)
        signal[start : start + burst_len] += envelope * band[start : start + burst_len]

    # The scene cue that separates sound-alike scenes: in about half the clips only, so
    # sound alone cannot tell those scenes apart every time.
    present, strength = rng.random() < _CUE_RATE, rng.uniform(0.08, 0.2)
    cue = present * strength * np.sin(2 * np.pi * _AUDIO_CUE_HZ[label] * t)
    signal += cue[:, None]

    signal += hum_level * sum(np.sin(2 * np.pi * hum_hz * k * t) / k for k in (1, 2, 3))[:, None]
    signal += rng.uniform(0.02, 0.12) * rng.standard_normal((n, 2))
    signal *= np.array([1 - balance, 1 + balance])[None, :]
    peak = np.max(np.abs(signal)) + 1e-9
    return (signal / peak * 0.5 * gain).clip(-1, 1).astype(np.float32)


def synth_frames(
    label: str,
    seconds: float,
    width: int,
    height: int,
    fps: float,
    rng: np.random.Generator,
    loc_rng: np.random.Generator,
) -> np.ndarray:
    """One clip's pictures [shape=(frames, height, width, 3), uint8].

    The scene's look (its group's colours, horizon, stripes and moving shapes) plus a
    faint scene patch, coloured by the location (cast, brightness, camera tilt) and
    per-clip noise.
    """
    sig = _VISUAL_SIGNATURES[_VISUAL_GROUP[label]]
    n_frames = max(1, int(round(seconds * fps)))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    yn, xn = ys / height, xs / width

    cast = loc_rng.uniform(-22, 22, size=3)
    brightness = loc_rng.uniform(0.8, 1.2)
    horizon = sig["horizon"] + loc_rng.uniform(-0.08, 0.08)
    tilt = loc_rng.uniform(-0.1, 0.1)

    top, bottom = np.array(sig["top"], np.float32), np.array(sig["bottom"], np.float32)
    edge = 1 / (1 + np.exp(-(yn - horizon - tilt * (xn - 0.5)) * 40))
    background = top * (1 - edge)[..., None] + bottom * edge[..., None]
    angle, cycles, contrast = sig["stripes"]
    theta = np.deg2rad(angle + rng.uniform(-8, 8))
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * cycles * (xn * np.cos(theta) + yn * np.sin(theta) * height / width) + phase)
    background += (contrast * rng.uniform(0.7, 1.2) * stripes)[..., None]

    cue_x, cue_y, cue_rgb = _VISUAL_CUE[label]
    cue_mask = ((np.abs(xn - cue_x) < 0.09) & (np.abs(yn - cue_y) < 0.12)).astype(np.float32)
    present, strength = rng.random() < _CUE_RATE, rng.uniform(0.5, 0.8)
    strength *= present  # as for sound: the look-alike scenes differ in about half the clips
    background = background * (1 - strength * cue_mask[..., None]) + strength * cue_mask[..., None] * np.array(
        cue_rgb, np.float32
    )
    background = background * brightness + cast

    # Blocky per-clip noise (cheap to encode, survives downscaling).
    block = 8
    coarse = rng.normal(0, 12, size=(4, -(-height // block), -(-width // block), 3)).astype(np.float32)
    noise = coarse.repeat(block, axis=1).repeat(block, axis=2)[:, :height, :width]

    count, shape_rgb, radius, speed = sig["shapes"]
    centres = rng.uniform(0, 1, size=(count, 2)) * [width, height]
    velocity = rng.normal(0, 1, size=(count, 2)) * speed * width
    shape_rgb = np.array(shape_rgb, np.float32) * brightness + cast
    r = radius * height
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        frame = background + noise[i % len(noise)]
        positions = (centres + velocity * i / fps) % [width, height]
        for cx, cy in positions:
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 < r * r
            frame[inside] = shape_rgb
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames
