"""Synthetic test signals shared by the speaker-perturbation tests (batched and Praat)."""

import numpy as np
from conftest import require_oracle

SR = 16000


def synthetic_vowel(f0=120.0, formants=((700, 80), (1200, 90), (2500, 120)), seconds=1.2):
    """A synthetic vowel: a pulse train at f0 through three resonators."""
    from scipy.signal import lfilter

    n = int(seconds * SR)
    x = np.zeros(n)
    x[:: int(round(SR / f0))] = 1.0
    for freq, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SR), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def median_f0(y):
    """Median f0 (Hz) by librosa's pYIN, the oracle of the pitch tests."""
    librosa = require_oracle("librosa")  # a test requirement (requirements-dev.txt)

    f0, _, _ = librosa.pyin(y, fmin=50, fmax=600, sr=SR, frame_length=1024)
    return float(np.nanmedian(f0))
