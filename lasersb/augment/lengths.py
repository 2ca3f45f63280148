"""Conversions between SpeechBrain-style relative lengths and exact sample counts.

Every augmentation in :mod:`lasersb.augment` takes and returns *relative* lengths (``(B,)``,
valid samples divided by the padded length, as in SpeechBrain's ``PaddedBatch``) but works
internally on whole sample counts, so that frame counts computed downstream from the lengths
are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch


def relative_to_samples(lens: torch.Tensor | None, total: int, batch: int | None = None):
    """Convert relative lengths to whole sample counts.

    Parameters
    ----------
    lens : torch.Tensor or None
        Relative lengths ``(B,)`` in ``[0, 1]``; ``None`` means every item is full length.
    total : int
        Padded length ``T`` of the batch.
    batch : int, optional
        Batch size, needed when ``lens`` is None.

    Returns
    -------
    torch.LongTensor
        ``(B,)`` valid samples per item (on the CPU), ``round(lens * total)`` clamped to
        ``[0, total]``.

    Example
    -------
    >>> relative_to_samples(torch.tensor([1.0, 0.5]), 10).tolist()
    [10, 5]
    """
    if lens is None:
        if batch is None:
            raise ValueError("relative_to_samples: pass `batch` when `lens` is None.")
        return torch.full((batch,), int(total), dtype=torch.long)
    lens = torch.as_tensor(lens)
    if lens.dim() != 1:
        raise ValueError(
            f"relative lengths must be a 1-D tensor (B,), got shape {tuple(lens.shape)}"
        )
    n = torch.round(lens.detach().to("cpu", torch.float64) * total).long()
    return n.clamp_(0, int(total))


def samples_to_relative(num_samples: torch.Tensor, total: int, device=None) -> torch.Tensor:
    """Convert whole sample counts to relative lengths w.r.t. ``total`` (float32).

    ``relative_to_samples(samples_to_relative(n, T), T) == n`` holds exactly for any
    ``T < 2**24``.

    Example
    -------
    >>> samples_to_relative(torch.tensor([4, 2]), 4).tolist()
    [1.0, 0.5]
    """
    total = max(int(total), 1)
    rel = num_samples.to(torch.float64) / total
    return rel.to(device=device, dtype=torch.float32)


def draw_indices(num_options: int, batch: int, generator: torch.Generator | None = None):
    """Draw ``batch`` uniform indices in ``[0, num_options)`` on the CPU.

    Drawing on the CPU (then moving results to the data's device) makes results reproducible
    with a CPU ``torch.Generator`` whatever device the waveforms live on.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> draw_indices(3, 4, g).shape
    torch.Size([4])
    """
    if num_options < 1:
        raise ValueError("draw_indices: need at least one option to choose from.")
    device = generator.device if generator is not None else "cpu"
    return torch.randint(num_options, (batch,), generator=generator, device=device).cpu()


def draw_uniform(low: float, high: float, batch: int, generator=None) -> torch.Tensor:
    """Draw ``batch`` values from ``U[low, high]`` on the CPU (float64).

    Example
    -------
    >>> v = draw_uniform(2.0, 3.0, 5, torch.Generator().manual_seed(0))
    >>> bool(((v >= 2) & (v <= 3)).all())
    True
    """
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64).cpu()
    return low + (high - low) * u


def rational_ratio(value: float, tolerance: float = 5e-4, max_denominator: int = 1000) -> Fraction:
    """Smallest-denominator fraction within a relative ``tolerance`` of ``value``.

    Used to turn resampling ratios such as ``2 ** (2 / 12)`` into small integer frequency pairs
    so that the polyphase sinc kernel stays tiny (torchaudio's ``pitch_shift`` uses
    ``int(sr / rate) / sr`` which has no common divisor and a kernel of ~16000 x 18000 taps).

    Example
    -------
    >>> rational_ratio(1.1)
    Fraction(11, 10)
    >>> rational_ratio(2 ** (2 / 12))
    Fraction(46, 41)
    """
    if not value > 0:
        raise ValueError(f"rational_ratio: value must be positive, got {value}")
    for den in range(1, max_denominator + 1):
        num = max(1, round(value * den))
        if abs(num / (den * value) - 1.0) <= tolerance:
            return Fraction(num, den)
    return Fraction(value).limit_denominator(max_denominator)


def as_option_list(values, name: str) -> list[float]:
    """Validate a non-empty sequence of numbers (the options to draw from).

    Example
    -------
    >>> as_option_list((0.9, 1.0), "factors")
    [0.9, 1.0]
    """
    if isinstance(values, int | float):
        values = [values]
    if not isinstance(values, Sequence | torch.Tensor) or len(values) == 0:
        raise ValueError(f"`{name}` must be a non-empty list of numbers, got {values!r}")
    return [float(v) for v in values]


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
