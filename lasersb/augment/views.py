"""LASER's two views of an utterance: the original and a speed-perturbed + pitch-shifted copy.

From the LASER paper (Meghanani & Hain, Interspeech 2024): for each utterance, the perturbed view
is speed perturbation with a factor drawn from ``[0.9, 1.0, 1.1]`` (HuBERT) or
``[0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2]`` (WavLM), then a pitch shift of +2 or -2 semitones;
the order of the two views is random. Everything runs batched on the input's device, the
random choices are drawn on the CPU (reproducible with a CPU ``torch.Generator``).
"""

from __future__ import annotations

import torch
from torch import nn

from lasersb.augment.lengths import (
    as_option_list,
    draw_indices,
    relative_to_samples,
    samples_to_relative,
)
from lasersb.augment.pitch import speed_pitch_perturb_items
from lasersb.augment.speed import fit_length, valid_mask

HUBERT_SPEED_FACTORS = (0.9, 1.0, 1.1)
WAVLM_SPEED_FACTORS = (0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2)


class LaserViews(nn.Module):
    """Make the (original, perturbed) view pair of LASER SSFT, in random order per item.

    Parameters
    ----------
    speed_factors : sequence of float
        Speed factors drawn uniformly per item (1.1 = 10 % faster and shorter).
        HuBERT: ``(0.9, 1.0, 1.1)``; WavLM: ``(0.8, 0.85, 0.9, 1.0, 1.1, 1.15, 1.2)``.
    semitones : sequence of float
        Pitch shifts drawn uniformly per item, applied after the speed perturbation.
    sample_rate : int
        Sampling rate of the waveforms (sets the 32 ms phase-vocoder window).
    shuffle_order : bool
        If False, view_a is always the original (for debugging / analysis).

    Example
    -------
    >>> views = LaserViews(speed_factors=(1.1,), semitones=(2,))
    >>> wavs, lens = torch.randn(2, 3300), torch.tensor([1.0, 0.5])
    >>> a, a_lens, b, b_lens = views(wavs, lens, generator=torch.Generator().manual_seed(0))
    >>> sorted([a.shape[1], b.shape[1]])
    [3000, 3300]
    >>> n_a = torch.round(a_lens * a.shape[1]).long()
    >>> n_b = torch.round(b_lens * b.shape[1]).long()
    >>> sorted(n_a.tolist() + n_b.tolist())
    [1500, 1650, 3000, 3300]
    """

    def __init__(
        self,
        speed_factors=HUBERT_SPEED_FACTORS,
        semitones=(-2, 2),
        sample_rate: int = 16000,
        shuffle_order: bool = True,
    ):
        super().__init__()
        self.speed_factors = tuple(as_option_list(speed_factors, "speed_factors"))
        self.semitones = tuple(as_option_list(semitones, "semitones"))
        self.sample_rate = int(sample_rate)
        self.shuffle_order = bool(shuffle_order)

    def extra_repr(self) -> str:
        return (
            f"speed_factors={self.speed_factors}, semitones={self.semitones}, "
            f"sample_rate={self.sample_rate}, shuffle_order={self.shuffle_order}"
        )

    def draw(self, batch: int, generator=None):
        """Draw per-item (speed factor, semitones, perturbed-view-first flag) on the CPU.

        Example
        -------
        >>> speeds, shifts, swap = LaserViews().draw(4, torch.Generator().manual_seed(0))
        >>> len(speeds), len(shifts), swap.dtype
        (4, 4, torch.bool)
        """
        speed_idx = draw_indices(len(self.speed_factors), batch, generator)
        shift_idx = draw_indices(len(self.semitones), batch, generator)
        if self.shuffle_order:
            swap = draw_indices(2, batch, generator).bool()
        else:
            swap = torch.zeros(batch, dtype=torch.bool)
        speeds = [self.speed_factors[int(i)] for i in speed_idx]
        shifts = [self.semitones[int(i)] for i in shift_idx]
        return speeds, shifts, swap

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor | None = None, generator=None):
        """Return ``(view_a, lens_a, view_b, lens_b)``.

        Parameters
        ----------
        wavs : torch.Tensor
            ``(B, T)`` padded waveforms (any device).
        lens : torch.Tensor, optional
            ``(B,)`` relative lengths w.r.t. ``T``.
        generator : torch.Generator, optional
            CPU generator making the draws reproducible.

        Returns
        -------
        view_a, view_b : torch.Tensor
            ``(B, T_a)`` and ``(B, T_b)``; per item one is the original and the other the
            perturbed copy (random order), zero-padded to the longest item of that view.
        lens_a, lens_b : torch.Tensor
            ``(B,)`` relative lengths w.r.t. ``T_a`` / ``T_b``; ``round(lens * T)`` is exact.
        """
        if wavs.dim() != 2:
            raise ValueError(f"LaserViews expects (B, T) waveforms, got {tuple(wavs.shape)}")
        batch, total = wavs.shape
        n_orig = relative_to_samples(lens, total, batch)
        speeds, shifts, swap = self.draw(batch, generator)
        perturbed, n_pert = speed_pitch_perturb_items(
            wavs, n_orig, speeds, shifts, sample_rate=self.sample_rate
        )
        original = wavs * valid_mask(n_orig, total, wavs.device).to(wavs.dtype)
        n_a = torch.where(swap, n_pert, n_orig)
        n_b = torch.where(swap, n_orig, n_pert)
        view_a = self._assemble(original, perturbed, swap, n_a)
        view_b = self._assemble(perturbed, original, swap, n_b)
        lens_a = samples_to_relative(n_a, view_a.shape[1], device=wavs.device)
        lens_b = samples_to_relative(n_b, view_b.shape[1], device=wavs.device)
        return view_a, lens_a, view_b, lens_b

    @staticmethod
    def _assemble(keep, swapped_in, swap, num_samples):
        """Items where ``swap`` is False come from ``keep``, the others from ``swapped_in``."""
        total = max(int(num_samples.max()), 1) if num_samples.numel() else 0
        a = fit_length(keep, total)
        b = fit_length(swapped_in, total)
        take_b = swap.to(keep.device)[:, None]
        return torch.where(take_b, b, a)


__all__ = ["LaserViews", "HUBERT_SPEED_FACTORS", "WAVLM_SPEED_FACTORS", "stack_views"]


def stack_views(view_a, lens_a, view_b, lens_b):
    """Stack two batches of waveforms (relative lengths) into one padded batch of ``2B``.

    Arguments
    ---------
    view_a, view_b : torch.Tensor
        ``(B, Ta)`` and ``(B, Tb)`` waveforms.
    lens_a, lens_b : torch.Tensor
        Relative lengths ``(B,)`` of each batch, relative to its own padded length.

    Returns
    -------
    wavs : torch.Tensor
        ``(2B, max(Ta, Tb))`` waveforms, zero-padded.
    lens : torch.Tensor
        ``(2B,)`` lengths relative to the new padded length.

    Example
    -------
    >>> w, l = stack_views(torch.ones(2, 4), torch.tensor([1.0, 0.5]),
    ...                    torch.ones(2, 8), torch.tensor([1.0, 1.0]))
    >>> w.shape, l.tolist()
    (torch.Size([4, 8]), [0.5, 0.25, 1.0, 1.0])
    """
    length = max(view_a.shape[1], view_b.shape[1])
    wavs = view_a.new_zeros(view_a.shape[0] + view_b.shape[0], length)
    wavs[: view_a.shape[0], : view_a.shape[1]] = view_a
    wavs[view_a.shape[0] :, : view_b.shape[1]] = view_b
    lens = torch.cat([lens_a * (view_a.shape[1] / length), lens_b * (view_b.shape[1] / length)])
    return wavs, lens
