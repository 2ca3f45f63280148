"""Batched speed perturbation (Kaldi / sox ``speed``: resampling, changes tempo AND pitch).

A factor ``s`` plays the utterance ``s`` times faster: ``s = 1.1`` shortens it to ``1 / 1.1`` of
its duration and raises its pitch by 10 %. This is the convention of Kaldi's
``perturb_data_dir_speed.sh``, of HuBERT/WavLM's perturbation lists and of the LASER paper.
(SpeechBrain's ``SpeedPerturb(speeds=[110])`` does the opposite: it *lengthens* by 1.1.)

Items sharing a factor are resampled together with one polyphase sinc kernel
(:func:`torchaudio.functional.resample`, Hann-windowed sinc, 6 zero crossings), so a batch
costs at most ``len(factors)`` kernel applications, on the waveforms' own device.
"""

from __future__ import annotations

import torch
import torchaudio.functional as taF

from lasersb.augment.lengths import (
    as_option_list,
    draw_indices,
    rational_ratio,
    relative_to_samples,
    samples_to_relative,
)


def speed_fraction(factor: float):
    """Exact small fraction for a speed factor (``1.1 -> 11/10``, ``0.85 -> 17/20``).

    Example
    -------
    >>> speed_fraction(0.85)
    Fraction(17, 20)
    """
    if not factor > 0:
        raise ValueError(f"speed factors must be positive, got {factor}")
    return rational_ratio(factor, tolerance=1e-9, max_denominator=1000)


def speed_output_samples(num_samples: torch.Tensor, factor: float) -> torch.Tensor:
    """Valid samples after speed perturbation: ``ceil(n / factor)`` in exact integer arithmetic.

    Example
    -------
    >>> speed_output_samples(torch.tensor([16000, 11]), 1.1).tolist()
    [14546, 10]
    """
    frac = speed_fraction(factor)
    num, den = frac.numerator, frac.denominator
    return (num_samples.long() * den + num - 1) // num


def resample_ratio(wavs: torch.Tensor, ratio) -> torch.Tensor:
    """Resample a padded batch so that its length is multiplied by ``ratio`` (a Fraction).

    ``ratio = new / orig`` is applied with :func:`torchaudio.functional.resample`
    (``orig_freq = ratio.denominator``, ``new_freq = ratio.numerator``).

    Example
    -------
    >>> from fractions import Fraction
    >>> resample_ratio(torch.zeros(2, 110), Fraction(10, 11)).shape
    torch.Size([2, 100])
    """
    if ratio == 1:
        return wavs
    orig, new = ratio.denominator, ratio.numerator
    dtype = wavs.dtype
    x = wavs if dtype in (torch.float32, torch.float64) else wavs.float()
    return taF.resample(x, orig, new).to(dtype)


def valid_mask(num_samples: torch.Tensor, total: int, device) -> torch.Tensor:
    """Boolean ``(B, total)`` mask, True on the valid (non-padded) samples.

    Example
    -------
    >>> valid_mask(torch.tensor([2, 0]), 3, "cpu").tolist()
    [[True, True, False], [False, False, False]]
    """
    positions = torch.arange(total, device=device)
    return positions[None, :] < num_samples.to(device)[:, None]


def fit_length(wavs: torch.Tensor, total: int) -> torch.Tensor:
    """Crop or zero-pad the last dimension to ``total`` samples.

    Example
    -------
    >>> fit_length(torch.ones(1, 3), 5).tolist()
    [[1.0, 1.0, 1.0, 0.0, 0.0]]
    """
    length = wavs.shape[-1]
    if length >= total:
        return wavs[..., :total]
    return torch.nn.functional.pad(wavs, (0, total - length))


def speed_perturb(wavs: torch.Tensor, lens: torch.Tensor | None, factors, generator=None):
    """Speed-perturb every item of a padded batch with a factor drawn from ``factors``.

    Parameters
    ----------
    wavs : torch.Tensor
        ``(B, T)`` padded waveforms (any device).
    lens : torch.Tensor or None
        ``(B,)`` relative lengths w.r.t. ``T`` (SpeechBrain style); None = all full length.
    factors : sequence of float
        Speed factors to draw from uniformly per item, e.g. ``(0.9, 1.0, 1.1)`` (HuBERT) or
        ``(0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2)`` (WavLM). ``1.1`` = 10 % faster and shorter.
    generator : torch.Generator, optional
        CPU generator for reproducible draws.

    Returns
    -------
    wavs : torch.Tensor
        ``(B, T')`` perturbed waveforms, ``T'`` = longest perturbed item; padding is zero.
    lens : torch.Tensor
        ``(B,)`` relative lengths w.r.t. ``T'``; ``round(lens * T')`` is the exact number of
        valid samples ``ceil(n / factor)``.
    factors_used : torch.Tensor
        ``(B,)`` float32 factor applied to each item (CPU).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> y, y_lens, used = speed_perturb(torch.randn(2, 1600), torch.tensor([1.0, 0.5]), [1.1], g)
    >>> y.shape, used.tolist()
    (torch.Size([2, 1455]), [1.100000023841858, 1.100000023841858])
    >>> torch.round(y_lens * y.shape[1]).long().tolist()
    [1455, 728]
    """
    if wavs.dim() != 2:
        raise ValueError(f"speed_perturb expects (B, T) waveforms, got shape {tuple(wavs.shape)}")
    options = as_option_list(factors, "factors")
    batch, total = wavs.shape
    n_in = relative_to_samples(lens, total, batch)
    choice = draw_indices(len(options), batch, generator)
    used = torch.tensor(options, dtype=torch.float64)[choice]
    n_out = torch.zeros(batch, dtype=torch.long)
    for k, factor in enumerate(options):
        sel = choice == k
        if sel.any():
            n_out[sel] = speed_output_samples(n_in[sel], factor)
    total_out = int(n_out.max()) if batch else 0
    out = wavs.new_zeros(batch, total_out)
    x = wavs * valid_mask(n_in, total, wavs.device).to(wavs.dtype)
    for k, factor in enumerate(options):
        idx = torch.nonzero(choice == k).flatten()
        if idx.numel() == 0:
            continue
        longest = int(n_in[idx].max())
        group = x[idx.to(wavs.device), :longest]
        y = fit_length(resample_ratio(group, 1 / speed_fraction(factor)), total_out)
        mask = valid_mask(n_out[idx], total_out, wavs.device)
        out[idx.to(wavs.device)] = y * mask.to(y.dtype)
    lens_out = samples_to_relative(n_out, total_out, device=wavs.device)
    return out, lens_out, used.float()


__all__ = [
    "speed_perturb",
    "speed_fraction",
    "speed_output_samples",
    "resample_ratio",
    "valid_mask",
    "fit_length",
]
