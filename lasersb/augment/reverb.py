"""Batched reverberation: FFT convolution with recorded or synthetic room impulse responses.

With RIR files (e.g. RIRS_NOISES simulated/real RIRs) each item gets a random one; without,
each item gets a synthetic RIR: a unit direct-path impulse followed, from 2.5 ms on, by
Gaussian noise with an exponential envelope decaying by 60 dB in ``RT60 ~ U(rt60_range)``
seconds (Polack's statistical model), its energy set by a direct-to-reverberant ratio
``DRR ~ U(drr_range)`` dB. The output keeps the input length, is aligned on the direct path
(the RIR's largest peak, so there is no added delay) and keeps the input's power.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lasersb.augment.lengths import draw_uniform, relative_to_samples
from lasersb.augment.sources import AudioBank, list_audio_files
from lasersb.augment.speed import valid_mask


def synthetic_rir(
    rt60: float, drr_db: float, sample_rate: int = 16000, generator=None, onset: float = 0.0025
) -> torch.Tensor:
    """Exponentially decaying noise RIR with a unit direct path at index 0.

    Parameters
    ----------
    rt60 : float
        Reverberation time (60 dB decay) in seconds; the RIR lasts ``rt60`` seconds.
    drr_db : float
        Direct-to-reverberant energy ratio in dB.
    sample_rate : int
        Sampling rate.
    generator : torch.Generator, optional
        CPU generator.
    onset : float
        Delay of the diffuse tail after the direct path, in seconds.

    Example
    -------
    >>> h = synthetic_rir(0.3, 6.0, generator=torch.Generator().manual_seed(0))
    >>> h.shape, float(h[0]), round(10 * math.log10(1 / h[1:].pow(2).sum().item()), 3)
    (torch.Size([4800]), 1.0, 6.0)
    """
    length = max(2, int(math.ceil(rt60 * sample_rate)))
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    device = generator.device if generator is not None else "cpu"
    tail = torch.randn(length, generator=generator, device=device, dtype=torch.float64).cpu()
    tail = tail * torch.exp(-3.0 * math.log(10.0) * t / rt60)
    tail[: max(1, int(round(onset * sample_rate)))] = 0.0
    energy = tail.pow(2).sum().clamp_min(1e-30)
    tail = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / float(energy))
    tail[0] = 1.0
    return tail.float()


def convolve_aligned(wavs: torch.Tensor, rirs: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
    """Batched FFT convolution ``(B, T) * (B, R)``, cropped to ``T`` from each direct path.

    ``out[i, t] = sum_k rirs[i, k] * wavs[i, t + direct[i] - k]``.

    Example
    -------
    >>> x = torch.arange(4.0)[None]
    >>> y = convolve_aligned(x, torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([1]))
    >>> torch.allclose(y, torch.tensor([[0.0, 1.0, 2.5, 4.0]]), atol=1e-5)
    True
    """
    total, rir_len = wavs.shape[-1], rirs.shape[-1]
    n_fft = 1 << (total + rir_len - 1 - 1).bit_length()
    spec = torch.fft.rfft(wavs.float(), n_fft) * torch.fft.rfft(rirs.float(), n_fft)
    full = torch.fft.irfft(spec, n_fft)
    index = direct.to(wavs.device)[:, None] + torch.arange(total, device=wavs.device)[None]
    return torch.gather(full, 1, index).to(wavs.dtype)


class Reverb(nn.Module):
    """Reverberate a random subset of items (probability ``prob``) with random RIRs.

    Parameters
    ----------
    rir_folder_or_files : str or Path or list, optional
        Folder (recursive), CSV (``wav``/``rir`` column) or list of RIR files; None = synthetic
        RIRs (see the module docstring).
    prob : float
        Probability that an item is reverberated.
    sample_rate : int
        Expected sampling rate of the RIR files.
    rt60_range : (float, float)
        RT60 range in seconds of synthetic RIRs (default 0.2-0.8 s, typical rooms).
    drr_range : (float, float)
        Direct-to-reverberant ratio range in dB of synthetic RIRs.
    replacements : dict, optional
        ``$name`` placeholders to substitute in CSV paths.
    cache_audio : bool
        Keep decoded RIRs in memory (default True: RIRs are short).

    Example
    -------
    >>> reverb = Reverb(prob=1.0)
    >>> wavs = torch.zeros(2, 8000)
    >>> wavs[:, 100] = 1.0
    >>> out = reverb(wavs, torch.tensor([1.0, 0.5]), generator=torch.Generator().manual_seed(0))
    >>> out.shape, int(out[0].abs().argmax()), bool((out[1, 4000:] == 0).all())
    (torch.Size([2, 8000]), 100, True)
    """

    def __init__(
        self,
        rir_folder_or_files=None,
        prob: float = 0.45,
        sample_rate: int = 16000,
        rt60_range=(0.2, 0.8),
        drr_range=(0.0, 10.0),
        replacements=None,
        cache_audio: bool = True,
    ):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"Reverb: prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.sample_rate = int(sample_rate)
        self.rt60_range = tuple(float(v) for v in rt60_range)
        self.drr_range = tuple(float(v) for v in drr_range)
        if not 0 < self.rt60_range[0] <= self.rt60_range[1]:
            raise ValueError(f"Reverb: need 0 < rt60_range[0] <= rt60_range[1], got {rt60_range}")
        self.bank = None
        if rir_folder_or_files is not None:
            files = list_audio_files(rir_folder_or_files, dict(replacements or {}))
            if not files:
                raise FileNotFoundError(f"Reverb: no RIR files in {rir_folder_or_files}.")
            self.bank = AudioBank(files, self.sample_rate, cache=cache_audio)

    def extra_repr(self) -> str:
        source = f"{len(self.bank)} RIR files" if self.bank else f"synthetic RT60 {self.rt60_range}"
        return f"prob={self.prob}, {source}"

    def draw_rir(self, generator=None) -> torch.Tensor:
        """One RIR, unit energy (from the files or synthetic).

        Example
        -------
        >>> round(float(Reverb().draw_rir(torch.Generator().manual_seed(0)).pow(2).sum()), 5)
        1.0
        """
        if self.bank is not None:
            device = generator.device if generator is not None else "cpu"
            index = int(torch.randint(len(self.bank), (1,), generator=generator, device=device))
            rir = self.bank.read(index)
        else:
            rt60 = float(draw_uniform(*self.rt60_range, 1, generator)[0])
            drr = float(draw_uniform(*self.drr_range, 1, generator)[0])
            rir = synthetic_rir(rt60, drr, self.sample_rate, generator)
        energy = rir.pow(2).sum()
        if not energy > 0:
            raise ValueError("Reverb: an RIR file is all zeros: remove it from the RIR list.")
        return rir / energy.sqrt()

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor | None = None, generator=None):
        """Return ``wavs`` (same shape) with a random subset of items reverberated.

        Parameters
        ----------
        wavs : torch.Tensor
            ``(B, T)`` padded waveforms (any device).
        lens : torch.Tensor, optional
            ``(B,)`` relative lengths; the reverberant tail beyond an item's length is cut and
            its padding stays zero.
        generator : torch.Generator, optional
            CPU generator for reproducible draws.
        """
        if wavs.dim() != 2:
            raise ValueError(f"Reverb expects (B, T) waveforms, got {tuple(wavs.shape)}")
        batch, total = wavs.shape
        n_valid = relative_to_samples(lens, total, batch)
        apply = draw_uniform(0.0, 1.0, batch, generator) < self.prob
        chosen = torch.nonzero(apply & (n_valid > 0)).flatten().tolist()
        if not chosen:
            return wavs
        rirs = [self.draw_rir(generator) for _ in chosen]
        direct = torch.tensor([int(r.abs().argmax()) for r in rirs])
        rir_len = max(r.numel() for r in rirs)
        stacked = torch.stack([nn.functional.pad(r, (0, rir_len - r.numel())) for r in rirs])
        index = torch.tensor(chosen, device=wavs.device)
        mask = valid_mask(n_valid[chosen], total, wavs.device).to(wavs.dtype)
        dry = wavs[index] * mask
        wet = convolve_aligned(dry, stacked.to(wavs.device), direct) * mask
        dry_power = dry.pow(2).sum(1, dtype=torch.float64)
        wet_power = wet.pow(2).sum(1, dtype=torch.float64).clamp_min(1e-30)
        gain = torch.sqrt(dry_power / wet_power).to(wavs.dtype)
        out = wavs.clone()
        out[index] = wet * gain[:, None]
        return out


__all__ = ["Reverb", "synthetic_rir", "convolve_aligned"]
