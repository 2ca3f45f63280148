"""Speech-enhancement metrics: SI-SNR over the valid samples of a padded batch.

(PESQ and STOI come from the optional ``pesq`` / ``pystoi`` packages, in the SE Brain.)
"""

from __future__ import annotations

import torch
from speechbrain.dataio.dataio import length_to_mask

__all__ = ["si_snr"]


def si_snr(estimate: torch.Tensor, target: torch.Tensor, lens=None, eps: float = 1e-8):
    """Scale-invariant SNR (dB) per utterance over the valid samples.

    Kept instead of ``speechbrain.nnet.losses.cal_si_snr``, which has no lengths: on a padded
    batch it counts the enhancer's output in the padding (measured: 19.02 dB instead of the
    unpadded 20.00 dB for a half-length item, ``tests/test_se_finetune.py``).

    Example
    -------
    >>> t = torch.randn(2, 1000)
    >>> bool((si_snr(3 * t, t) > 60).all())  # a scaled copy: no distortion at all
    True
    >>> noisy = t + 0.1 * torch.randn(2, 1000)
    >>> bool(((si_snr(noisy, t) - 20).abs() < 1.5).all())  # noise 20 dB below the signal
    True
    """
    batch, total = target.shape
    if lens is None:
        mask = torch.ones_like(target)
    else:
        samples = torch.round(torch.as_tensor(lens, device=target.device) * total).long()
        mask = length_to_mask(samples, max_len=total, dtype=target.dtype)
    estimate, target = estimate * mask, target * mask
    count = mask.sum(1, keepdim=True).clamp(min=1)
    estimate = (estimate - estimate.sum(1, keepdim=True) / count) * mask
    target = (target - target.sum(1, keepdim=True) / count) * mask
    proj = (estimate * target).sum(1, keepdim=True) / (target.pow(2).sum(1, keepdim=True) + eps)
    signal = proj * target
    noise = estimate - signal
    return 10 * torch.log10((signal.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))
