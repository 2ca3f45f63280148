"""Random cropping of a padded waveform batch to a maximum length (Spin's 17 s training crops)."""

from __future__ import annotations

import torch

from lasersb.augment.lengths import relative_to_samples, samples_to_relative

__all__ = ["random_crop"]


def random_crop(wavs, lens, crop_samples: int, generator=None):
    """Crop each item longer than ``crop_samples`` to a random window of that length.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, T)`` padded waveforms.
    lens : torch.Tensor
        ``(B,)`` relative lengths.
    crop_samples : int
        Longest kept item (Spin: 272,000 samples, 17 s); ``<= 0``: no cropping.
    generator : torch.Generator, optional
        CPU generator of the window starts.

    Returns
    -------
    wavs, lens : torch.Tensor
        ``(B, min(T, crop_samples))`` and the new relative lengths.

    Example
    -------
    >>> w, l = random_crop(torch.arange(20.0).repeat(2, 1), torch.tensor([1.0, 0.25]), 8)
    >>> w.shape, l.tolist(), w[1, :5].tolist()
    (torch.Size([2, 8]), [1.0, 0.625], [0.0, 1.0, 2.0, 3.0, 4.0])
    """
    batch, total = wavs.shape
    n = relative_to_samples(lens, total, batch)
    if crop_samples <= 0 or total <= crop_samples:
        return wavs, lens
    spare = (n - crop_samples).clamp(min=0)
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64).cpu()
    starts = torch.floor(u * (spare + 1).double()).long()
    index = starts.unsqueeze(1) + torch.arange(crop_samples).unsqueeze(0)
    index = index.clamp(max=total - 1).to(wavs.device)
    cropped = wavs.gather(1, index)
    kept = n.clamp(max=crop_samples)
    valid = torch.arange(crop_samples).unsqueeze(0) < kept.unsqueeze(1)
    cropped = cropped * valid.to(wavs.device, wavs.dtype)
    return cropped, samples_to_relative(kept, crop_samples, device=wavs.device)
