"""Synthetic stand-ins for the 18 DEMAND noise types of the embedded mini corpus.

Each DEMAND type name gets a noise of its own character, built from coloured noises, babble
(synthesised speech of speakers who appear nowhere else in the mini corpus), mains hum with
harmonics, engine harmonics, clicks and impulses, footsteps, bird chirps, passing cars, chimes
and music chords. The split follows the type names, as in the DEMAND-based noisy speech sets:
the first letters D (domestic), T (transportation), O (office), P (public) are *seen* (used
for training) and the N (nature) and S (street) types are *unseen* (held out for testing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEMAND_SEEN = (
    "DKITCHEN",
    "DWASHING",
    "DLIVING",
    "TMETRO",
    "TBUS",
    "TCAR",
    "OOFFICE",
    "OHALLWAY",
    "OMEETING",
    "PSTATION",
    "PCAFETER",
    "PRESTO",
)
"""DEMAND types used for training (seen noise conditions)."""

DEMAND_UNSEEN = ("NFIELD", "NRIVER", "NPARK", "STRAFFIC", "SPSQUARE", "SCAFE")
"""DEMAND types held out for testing (unseen noise conditions)."""

DEMAND_TYPES = DEMAND_SEEN + DEMAND_UNSEEN
"""All 18 DEMAND noise type names."""


def _spectral(rng: np.random.Generator, n: int, sr: int, exponent: float, lo=20.0, hi=None):
    """Gaussian noise with power spectrum ~ 1/f**exponent between ``lo`` and ``hi`` Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    gain = np.zeros_like(freqs)
    band = (freqs >= lo) & (freqs <= (hi if hi is not None else sr / 2))
    gain[band] = freqs[band] ** (-exponent / 2.0)
    out = np.fft.irfft(spec * gain, n)
    return out / (np.std(out) + 1e-12)


def _band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Brick-wall band-pass filter (FFT)."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spec, x.size)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _hum(n: int, sr: int, f0: float, harmonics: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for h in range(1, harmonics + 1):
        out += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h**0.7
    return _unit(out)


def _impulses(n, sr, rng, per_second, decay_ms, lo, hi):
    """Sparse clicks: short decaying noise bursts at random times (band-limited)."""
    out = np.zeros(n)
    length = int(sr * decay_ms / 1000 * 5)
    env = np.exp(-np.arange(length) / (sr * decay_ms / 1000))
    for start in rng.integers(0, max(1, n - length), size=rng.poisson(per_second * n / sr)):
        out[start : start + length] += rng.uniform(0.3, 1.0) * env * rng.standard_normal(length)
    return _unit(_band(out, sr, lo, hi) + 1e-9)


def _footsteps(n, sr, rng, steps_per_second=1.8):
    out = np.zeros(n)
    length = int(0.08 * sr)
    thump = np.exp(-np.arange(length) / (0.015 * sr)) * rng.standard_normal(length)
    pos = rng.uniform(0, 0.5) * sr
    while pos < n - length:
        out[int(pos) : int(pos) + length] += rng.uniform(0.5, 1.0) * thump
        pos += sr / steps_per_second * rng.uniform(0.85, 1.15)
    return _unit(_band(out, sr, 40, 1500) + 1e-9)


def _chirps(n, sr, rng, per_second=1.5):
    """Bird-like frequency sweeps between 2 and 6 kHz."""
    out = np.zeros(n)
    for start in rng.integers(0, max(1, n - sr // 4), size=rng.poisson(per_second * n / sr)):
        length = int(rng.uniform(0.05, 0.2) * sr)
        t = np.arange(length) / sr
        f_start, f_end = rng.uniform(2000, 6000, size=2)
        phase = 2 * np.pi * (f_start * t + (f_end - f_start) * t**2 / (2 * t[-1] + 1e-9))
        out[start : start + length] += np.sin(phase) * np.hanning(length)
    return _unit(out + 1e-9)


def _swells(n, sr, rng, per_second=0.3):
    """Passing cars: brown-noise bursts under slow Gaussian envelopes."""
    body = _spectral(rng, n, sr, 2.0, lo=30, hi=2000)
    t = np.arange(n) / sr
    env = np.full(n, 0.1)
    for centre in rng.uniform(0, n / sr, size=max(1, rng.poisson(per_second * n / sr))):
        env += np.exp(-0.5 * ((t - centre) / rng.uniform(0.4, 1.0)) ** 2)
    return _unit(body * env)


def _tones(n, sr, rng, freqs: Sequence[float], on_seconds: float, per_second: float):
    """Short tonal events (horns, chimes) made of the given partials."""
    out = np.zeros(n)
    length = int(on_seconds * sr)
    t = np.arange(length) / sr
    events = max(1, rng.poisson(per_second * n / sr))
    for start in rng.integers(0, max(1, n - length), size=events):
        note = sum(np.sin(2 * np.pi * f * t) for f in freqs) * np.hanning(length)
        out[start : start + length] += note
    return _unit(out + 1e-9)


def _music(n, sr, rng):
    """Slow chord progression of sine partials (background music)."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    chord_len = int(1.5 * sr)
    for start in range(0, n, chord_len):
        root = 220 * 2 ** (rng.integers(0, 12) / 12)
        seg = t[start : start + chord_len]
        for ratio in (1.0, 1.26, 1.5):
            out[start : start + chord_len] += np.sin(2 * np.pi * root * ratio * seg)
    return _unit(out * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t)))


def _am(x, sr, rate_hz, depth, rng):
    t = np.arange(x.size) / sr
    return x * (1 - depth + depth * 0.5 * (1 + np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 6))))


def _babble(streams: Sequence[np.ndarray], n: int, count: int, rng: np.random.Generator):
    """Sum of ``count`` talker streams, each from a random offset (looped to length ``n``)."""
    if not streams:
        raise ValueError("babble needs at least one synthesised talker stream")
    out = np.zeros(n)
    for index in rng.choice(len(streams), size=min(count, len(streams)), replace=False):
        stream = streams[index]
        offset = int(rng.integers(stream.size))
        looped = np.resize(np.roll(stream, -offset), n)
        out += rng.uniform(0.6, 1.0) * _unit(looped + 1e-9)
    return _unit(out)


def _reverb(x, sr, rng, rt60=0.6):
    length = int(rt60 * sr)
    ir = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
    ir[0] = 1.0
    return _unit(
        np.fft.irfft(np.fft.rfft(x, x.size + length) * np.fft.rfft(ir, x.size + length))[: x.size]
    )


def demand_noise(
    noise_type: str,
    seconds: float,
    rng: np.random.Generator,
    babble_streams: Sequence[np.ndarray],
    sample_rate: int = 16000,
) -> np.ndarray:
    """Synthesise ``seconds`` of the stand-in for one DEMAND noise type.

    Parameters
    ----------
    noise_type : str
        One of :data:`DEMAND_TYPES`.
    seconds : float
        Duration.
    rng : numpy.random.Generator
        Source of randomness.
    babble_streams : sequence of numpy.ndarray
        Long speech recordings (16 kHz) of babble talkers.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        float32 noise with an RMS of about 0.1 (-20 dBFS) and peaks below 1.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> talk = [np.sin(np.arange(16000) / 7.0) * (np.arange(16000) % 4000 < 2500)] * 3
    >>> x = demand_noise("TCAR", 1.0, rng, talk)
    >>> x.shape, x.dtype.name, bool(0.05 < np.sqrt(np.mean(x ** 2)) < 0.15)
    ((16000,), 'float32', True)
    """
    n = int(round(seconds * sample_rate))
    sr = sample_rate
    r = rng

    def pink():
        return _spectral(r, n, sr, 1.0)

    def brown():
        return _spectral(r, n, sr, 2.0)

    def babble(count):
        return _babble(babble_streams, n, count, r)

    recipes: dict[str, Callable[[], np.ndarray]] = {
        "DKITCHEN": lambda: (
            _impulses(n, sr, r, 4, 8, 1500, 7000)
            + 0.5 * _am(_band(r.standard_normal(n), sr, 2000, 7000), sr, 5, 0.6, r)
            + 0.2 * brown()
        ),
        "DWASHING": lambda: (
            _am(_hum(n, sr, 48, 6, r), sr, 1.0, 0.7, r) + _am(brown(), sr, 0.5, 0.8, r)
        ),
        "DLIVING": lambda: _band(babble(2), sr, 300, 3400) + 0.3 * pink(),
        "TMETRO": lambda: (
            _am(brown(), sr, 3.0, 0.4, r)
            + 0.15 * _hum(n, sr, 2200, 1, r)
            + 0.2 * _impulses(n, sr, r, 2, 20, 100, 2000)
        ),
        "TBUS": lambda: (
            _hum(n, sr, 35 * r.uniform(0.9, 1.1), 12, r) + 0.6 * brown() + 0.25 * babble(2)
        ),
        "TCAR": lambda: _band(brown(), sr, 20, 300) + 0.15 * pink(),
        "OOFFICE": lambda: (
            0.6 * _hum(n, sr, 50, 8, r) + _impulses(n, sr, r, 6, 3, 1000, 6000) + 0.3 * pink()
        ),
        "OHALLWAY": lambda: _reverb(_footsteps(n, sr, r) + 0.5 * babble(2), sr, r, 0.9),
        "OMEETING": lambda: babble(3),
        "PSTATION": lambda: (
            babble(6) + 0.6 * brown() + 0.4 * _tones(n, sr, r, (660, 880, 1320), 0.8, 0.1)
        ),
        "PCAFETER": lambda: babble(6) + 0.5 * _impulses(n, sr, r, 3, 5, 2000, 7500),
        "PRESTO": lambda: (
            babble(4) + 0.4 * _impulses(n, sr, r, 2, 5, 2000, 7500) + 0.3 * _music(n, sr, r)
        ),
        "NFIELD": lambda: (
            _am(_band(r.standard_normal(n), sr, 20, 500), sr, 0.2, 0.8, r)
            + 0.4 * _chirps(n, sr, r, 0.8)
        ),
        "NRIVER": lambda: (
            _am(_band(r.standard_normal(n), sr, 800, 8000), sr, 7.0, 0.3, r)
            + 0.3 * r.standard_normal(n)
        ),
        "NPARK": lambda: pink() + 0.6 * _chirps(n, sr, r, 2.0) + 0.3 * babble(1),
        "STRAFFIC": lambda: _swells(n, sr, r) + 0.3 * _tones(n, sr, r, (400, 500), 0.4, 0.1),
        "SPSQUARE": lambda: babble(4) + 0.5 * _footsteps(n, sr, r) + 0.4 * pink(),
        "SCAFE": lambda: (
            babble(5)
            + 0.4 * _music(n, sr, r)
            + 0.3 * _am(_band(r.standard_normal(n), sr, 3000, 7000), sr, 0.3, 0.9, r)
        ),
    }
    if noise_type not in recipes:
        raise ValueError(f"unknown DEMAND type {noise_type!r}; expected one of {DEMAND_TYPES}")
    x = _unit(recipes[noise_type]()) * 0.1
    peak = np.max(np.abs(x))
    if peak > 0.95:
        x *= 0.95 / peak
    return x.astype(np.float32)
