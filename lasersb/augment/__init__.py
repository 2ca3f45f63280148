"""Batched, on-device waveform augmentation for LASER SSFT, DINO and SE fine-tuning.

All functions take padded ``(B, T)`` waveforms with SpeechBrain-style *relative* lengths and
return relative lengths w.r.t. the returned tensor's own padded length, rounded so that
``round(lens * T)`` is an exact sample count. Random choices are drawn on the CPU, so a CPU
``torch.Generator`` makes results reproducible on any device.

- :func:`speed_perturb`, :func:`pitch_shift`, :class:`LaserViews` (LASER's view pair),
  :func:`stack_views` (both views in one upstream batch)
- :func:`zero_pad_reference` (position-invariant SE)
- :func:`mix_at_snr`, :class:`NoiseMixer`, :class:`Reverb` (DINO / SE)
"""

from lasersb.augment.lengths import relative_to_samples, samples_to_relative
from lasersb.augment.noise import DINO_CATEGORIES, NoiseMixer, mix_at_snr
from lasersb.augment.padding import zero_pad_reference
from lasersb.augment.pitch import pitch_shift, speed_pitch_perturb_items, time_stretch
from lasersb.augment.reverb import Reverb, synthetic_rir
from lasersb.augment.speed import speed_perturb
from lasersb.augment.views import (
    HUBERT_SPEED_FACTORS,
    WAVLM_SPEED_FACTORS,
    LaserViews,
    stack_views,
)

__all__ = [
    "speed_perturb",
    "pitch_shift",
    "time_stretch",
    "speed_pitch_perturb_items",
    "LaserViews",
    "stack_views",
    "HUBERT_SPEED_FACTORS",
    "WAVLM_SPEED_FACTORS",
    "zero_pad_reference",
    "mix_at_snr",
    "NoiseMixer",
    "DINO_CATEGORIES",
    "Reverb",
    "synthetic_rir",
    "relative_to_samples",
    "samples_to_relative",
]
