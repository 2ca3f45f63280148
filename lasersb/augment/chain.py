"""Augmentation chains: the speaker recipes' noise + reverberation chain, and applying a chain.

:func:`speaker_augmentation` builds the chain of the DINO, x-vector and transfer recipes (their
YAML: ``augment: !apply:lasersb.augment.chain.speaker_augmentation``); :func:`apply_augmentation`
runs a chain (or one augmenter) on a batch, each item drawn independently. Augmenters may
change the length: the Brains crop or pad back with :func:`lasersb.augment.speed.fit_length`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lasersb.augment.noise import NoiseMixer
from lasersb.augment.reverb import Reverb

__all__ = ["apply_augmentation", "speaker_augmentation"]


def apply_augmentation(augment, wavs: torch.Tensor, lens=None):
    """Apply an augmentation (or a list of them) to a batch; each item is drawn independently.

    Each augmentation is called as ``aug(wavs, lens)`` and may return the waveforms or a tuple
    whose first item is the waveforms (and second the relative lengths).

    Example
    -------
    >>> apply_augmentation([lambda w, l: (2 * w, l)], torch.ones(1, 2))[0].tolist()
    [[2.0, 2.0]]
    """
    if augment is None:
        return wavs, lens
    augmentations = augment if isinstance(augment, (list, tuple)) else [augment]
    if lens is None:
        lens = torch.ones(wavs.shape[0], device=wavs.device)
    for aug in augmentations:
        if aug is None:
            continue
        out = aug(wavs, lens)
        if isinstance(out, (tuple, list)):
            wavs = out[0]
            if len(out) > 1 and isinstance(out[1], torch.Tensor):
                lens = out[1]
        else:
            wavs = out
    return wavs, lens


def speaker_augmentation(
    musan_folder=None,
    noise_folder=None,
    rir_folder=None,
    noise_prob: float = 0.7,
    reverb_prob: float = 0.45,
    sample_rate: int = 16000,
    cache_noise: bool = False,
) -> list:
    """The speaker recipes' augmentation chain: additive noise, then reverberation.

    Noise: MUSAN categories with the paper's SNR ranges (noise 0-18 dB, music 3-18 dB, babble
    of 3-7 speakers 3-18 dB) when ``musan_folder`` is given, otherwise any folder of noise
    recordings (``noise_folder``, e.g. the mini corpus's ``DEMAND``) at 0-18 dB, otherwise none.
    Reverberation: RIRs from ``rir_folder`` or synthetic ones (``reverb_prob`` 0 disables it).

    Returns
    -------
    list
        Augmenters ``aug(wavs, lens) -> wavs`` (:class:`lasersb.augment.noise.NoiseMixer`,
        :class:`lasersb.augment.reverb.Reverb`), for :func:`apply_augmentation`.

    Example
    -------
    >>> [type(a).__name__ for a in speaker_augmentation()]
    ['Reverb']
    >>> speaker_augmentation(reverb_prob=0.0)
    []
    """
    chain = []
    if musan_folder:
        root = Path(musan_folder)
        if not root.is_dir():
            raise FileNotFoundError(
                f"musan_folder {root} does not exist: give the MUSAN root (noise/, music/, "
                "speech/), or musan_folder=null with noise_folder=<folder of noises>."
            )
        categories = {
            "noise": {"source": root / "noise", "snr_range": (0.0, 18.0)},
            "music": {"source": root / "music", "snr_range": (3.0, 18.0)},
            "babble": {"source": root / "speech", "snr_range": (3.0, 18.0), "num_sources": (3, 7)},
        }
        chain.append(NoiseMixer(categories=categories, prob=noise_prob, sample_rate=sample_rate))
    elif noise_folder:
        chain.append(
            NoiseMixer(
                noise_folder,
                snr_range=(0.0, 18.0),
                prob=noise_prob,
                sample_rate=sample_rate,
                cache_audio=cache_noise,
            )
        )
    if reverb_prob > 0:
        chain.append(Reverb(rir_folder or None, prob=reverb_prob, sample_rate=sample_rate))
    return chain
