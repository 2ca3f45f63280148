"""Zero-padding of clean references by a whole number of SSL frames (position-invariant SE).

The position-invariant SE fine-tuning pads each clean reference with a little silence (2-5 %
of its own length) so that the model cannot rely on absolute positions; the pad is a multiple
of the SSL frame hop (320 samples = 20 ms at 16 kHz) so that the frames stay aligned.
"""

from __future__ import annotations

import math

import torch

from lasersb.augment.lengths import (
    draw_uniform,
    relative_to_samples,
    samples_to_relative,
)

_WHERE = ("start", "end", "random")


def zero_pad_reference(
    wavs: torch.Tensor,
    lens: torch.Tensor | None,
    fraction_range=(0.02, 0.05),
    hop: int = 320,
    where: str = "start",
    generator=None,
    return_offsets: bool = False,
):
    """Pad each item with zeros by a random fraction of its own length, in whole SSL frames.

    For item ``i`` with ``n_i`` valid samples, a fraction ``f ~ U[a, b]`` is drawn and the pad
    is ``hop * round(f * n_i / hop)``, clamped to the multiples of ``hop`` inside
    ``[a * n_i, b * n_i]`` (if that interval holds none, which happens for utterances shorter
    than ``hop / (b - a)`` samples, the nearest multiple of ``hop`` is used, possibly 0).

    Parameters
    ----------
    wavs : torch.Tensor
        ``(B, T)`` padded waveforms.
    lens : torch.Tensor or None
        ``(B,)`` relative lengths.
    fraction_range : (float, float)
        ``(a, b)``, ``0 <= a <= b``: the pad as a fraction of each item's own length.
    hop : int
        Frame hop of the SSL model in samples (320 for HuBERT/WavLM/wav2vec 2.0 at 16 kHz).
    where : {"start", "end", "random"}
        Put all the zeros before the signal, after it, or split them at a random multiple of
        ``hop`` between the two.
    generator : torch.Generator, optional
        CPU generator for reproducible draws.
    return_offsets : bool
        Also return the zeros inserted *before* each signal (its start offset in samples).

    Returns
    -------
    wavs : torch.Tensor
        ``(B, T')``, ``T' = max_i(n_i + pad_i)``, zero outside each padded signal.
    lens : torch.Tensor
        ``(B,)`` relative lengths ``(n_i + pad_i) / T'``.
    pad_samples : torch.LongTensor
        ``(B,)`` total zeros added to each item (a multiple of ``hop``), on the CPU.
    offsets : torch.LongTensor
        Only with ``return_offsets``: ``(B,)`` zeros before each signal.

    Example
    -------
    >>> wavs, lens = torch.ones(2, 32000), torch.tensor([1.0, 0.5])
    >>> g = torch.Generator().manual_seed(0)
    >>> padded, new_lens, pad = zero_pad_reference(wavs, lens, generator=g)
    >>> bool((pad % 320 == 0).all()), pad.tolist()
    (True, [1600, 640])
    >>> float(padded[0, :1600].abs().sum()), float(padded[0, 1600:].sum())
    (0.0, 32000.0)
    """
    if wavs.dim() != 2:
        raise ValueError(f"zero_pad_reference expects (B, T) waveforms, got {tuple(wavs.shape)}")
    if where not in _WHERE:
        raise ValueError(f"zero_pad_reference: where must be one of {_WHERE}, got {where!r}")
    low, high = (float(v) for v in fraction_range)
    if not 0 <= low <= high:
        raise ValueError(
            f"zero_pad_reference: need 0 <= a <= b, got fraction_range={fraction_range}"
        )
    if hop < 1:
        raise ValueError(f"zero_pad_reference: hop must be a positive sample count, got {hop}")
    batch, total = wavs.shape
    n_in = relative_to_samples(lens, total, batch)
    fraction = draw_uniform(low, high, batch, generator)
    frames = torch.round(fraction * n_in / hop).long()
    k_min = torch.tensor([math.ceil(low * n / hop - 1e-9) for n in n_in.tolist()])
    k_max = torch.tensor([math.floor(high * n / hop + 1e-9) for n in n_in.tolist()])
    inside = k_min <= k_max
    frames = torch.where(inside, torch.maximum(torch.minimum(frames, k_max), k_min), frames)
    pad = frames * hop
    if where == "start":
        offsets = pad.clone()
    elif where == "end":
        offsets = torch.zeros_like(pad)
    else:
        split = torch.floor(draw_uniform(0.0, 1.0, batch, generator) * (frames + 1)).long()
        offsets = torch.minimum(split, frames) * hop
    n_out = n_in + pad
    total_out = int(n_out.max()) if batch else 0
    out = wavs.new_zeros(batch, total_out)
    for i in range(batch):
        start, n = int(offsets[i]), int(n_in[i])
        out[i, start : start + n] = wavs[i, :n]
    new_lens = samples_to_relative(n_out, total_out, device=wavs.device)
    if return_offsets:
        return out, new_lens, pad, offsets
    return out, new_lens, pad


__all__ = ["zero_pad_reference"]
