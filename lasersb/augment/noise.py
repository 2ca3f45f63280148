"""Additive noise at a controlled SNR, batched (DINO speaker training, SE fine-tuning).

:func:`mix_at_snr` mixes given noises; :class:`NoiseMixer` draws, per item, a noise category,
file(s), a random crop and an SNR. Categories reproduce the Kaldi/MUSAN recipe style, with
configurable ranges: DINO (Chen et al.) uses noise 0-18 dB and music / babble 3-18 dB; Kaldi's
x-vector recipe uses noise 0-15 dB, music 5-15 dB, babble (3-7 summed speakers) 13-20 dB.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lasersb.augment.lengths import draw_uniform, relative_to_samples
from lasersb.augment.sources import AudioBank, list_audio_files
from lasersb.augment.speed import fit_length, valid_mask

DINO_CATEGORIES = {
    "noise": {"snr_range": (0.0, 18.0)},
    "music": {"snr_range": (3.0, 18.0)},
    "babble": {"snr_range": (3.0, 18.0), "num_sources": (3, 7)},
}


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db, lens=None) -> torch.Tensor:
    """Add ``noise`` to ``clean`` scaled to the given signal-to-noise ratio(s).

    Powers are measured on each item's valid part only; the padding stays zero. A noise
    shorter than ``T`` is tiled, a longer one cropped.

    Parameters
    ----------
    clean : torch.Tensor
        ``(B, T)`` (or ``(T,)``) clean waveforms.
    noise : torch.Tensor
        ``(B, T_n)`` (or ``(T_n,)``, shared by all items) noises.
    snr_db : float or torch.Tensor
        Target SNR in dB, a scalar or ``(B,)``.
    lens : torch.Tensor, optional
        ``(B,)`` relative lengths of ``clean``.

    Returns
    -------
    torch.Tensor
        ``(B, T)`` mixtures ``clean + g * noise`` with
        ``10 log10(P_clean / P_(g * noise)) = snr_db`` (silent noise -> clean unchanged).

    Example
    -------
    >>> clean, noise = torch.randn(2, 8000), torch.randn(2, 8000)
    >>> mixed = mix_at_snr(clean, noise, torch.tensor([3.0, 10.0]))
    >>> snr = 10 * torch.log10(clean.pow(2).sum(1) / (mixed - clean).pow(2).sum(1))
    >>> [round(v, 3) for v in snr.tolist()]
    [3.0, 10.0]
    """
    squeeze = clean.dim() == 1
    if squeeze:
        clean = clean[None]
    if clean.dim() != 2:
        raise ValueError(f"mix_at_snr expects (B, T) clean waveforms, got {tuple(clean.shape)}")
    batch, total = clean.shape
    noise = noise.to(device=clean.device, dtype=clean.dtype)
    if noise.dim() == 1:
        noise = noise.expand(batch, -1)
    if noise.shape[-1] < total and noise.shape[-1] > 0:
        noise = noise.repeat(1, -(-total // noise.shape[-1]))
    noise = fit_length(noise, total)
    mask = valid_mask(relative_to_samples(lens, total, batch), total, clean.device)
    mask = mask.to(clean.dtype)
    noise = noise * mask
    clean_power = (clean * mask).pow(2).sum(1, dtype=torch.float64)
    noise_power = noise.pow(2).sum(1, dtype=torch.float64)
    snr = torch.as_tensor(snr_db, dtype=torch.float64, device=clean.device).expand(batch)
    target = clean_power / torch.pow(10.0, snr / 10.0)
    gain = torch.where(
        noise_power > 0, torch.sqrt(target / noise_power.clamp_min(1e-30)), torch.zeros_like(target)
    )
    mixed = clean + gain.to(clean.dtype)[:, None] * noise
    return mixed[0] if squeeze else mixed


class NoiseMixer(nn.Module):
    """Mix a random noise crop into each item at a random SNR, with probability ``prob``.

    Parameters
    ----------
    noise_csv_or_folder : str or Path or list, optional
        Folder of noise recordings (searched recursively, e.g. the mini corpus's ``DEMAND``
        whose files are ``DEMAND/<TYPE>/ch01.wav``), SpeechBrain-style CSV (``wav`` column),
        or list of these.
    noise_files : list, optional
        Explicit noise files (added to the above).
    snr_range : (float, float)
        SNR range in dB of the default category.
    prob : float
        Probability that an item gets noise (others are returned unchanged).
    sample_rate : int
        Expected sampling rate of every noise file.
    categories : mapping, optional
        ``{name: {"source": folder|csv|files, "snr_range": (lo, hi), "num_sources": (a, b),
        "weight": w}}``; a category is drawn per item (proportionally to ``weight``, default
        1), then ``num_sources`` files (summed, like Kaldi's babble) and an SNR in its range.
        Example DINO setup: ``{"noise": {"source": musan/noise, "snr_range": (0, 18)},
        "music": {..., "snr_range": (3, 18)}, "babble": {"source": musan/speech,
        "snr_range": (3, 18), "num_sources": (3, 7)}}`` (see ``DINO_CATEGORIES``).
    replacements : dict, optional
        ``$name`` placeholders to substitute in CSV paths.
    cache_audio : bool
        Keep decoded noise files in memory (good for small sets such as DEMAND).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> sf.write(folder / "hum.wav", np.random.randn(8000).astype("float32") * 0.1, 16000)
    >>> mixer = NoiseMixer(folder, snr_range=(5, 5), prob=1.0)
    >>> clean = torch.randn(2, 16000)
    >>> clean[1, 8000:] = 0.0
    >>> noisy = mixer(clean, torch.tensor([1.0, 0.5]), generator=torch.Generator().manual_seed(0))
    >>> changed = noisy != clean
    >>> noisy.shape, bool(changed[1, :8000].any()), bool(changed[1, 8000:].any())
    (torch.Size([2, 16000]), True, False)
    """

    def __init__(
        self,
        noise_csv_or_folder=None,
        noise_files=None,
        snr_range=(0.0, 18.0),
        prob: float = 0.7,
        sample_rate: int = 16000,
        categories: Mapping | None = None,
        replacements: Mapping | None = None,
        cache_audio: bool = False,
    ):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"NoiseMixer: prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.sample_rate = int(sample_rate)
        specs: dict[str, dict] = {}
        if noise_csv_or_folder is not None or noise_files is not None:
            sources = [s for s in (noise_csv_or_folder, noise_files) if s is not None]
            specs["noise"] = {"source": sources, "snr_range": snr_range}
        for name, spec in (categories or {}).items():
            if "source" not in spec:
                raise ValueError(f"NoiseMixer: category {name!r} needs a 'source' entry.")
            specs[name] = {"snr_range": snr_range, **spec}
        if not specs:
            raise ValueError(
                "NoiseMixer needs noise: pass noise_csv_or_folder (a folder/CSV), noise_files "
                "or categories={'noise': {'source': ...}}."
            )
        self.names = list(specs)
        self.banks, self.snr_ranges, self.num_sources, weights = [], [], [], []
        for name in self.names:
            spec = specs[name]
            files = list_audio_files(spec["source"], dict(replacements or {}))
            if not files:
                raise FileNotFoundError(f"NoiseMixer: category {name!r} lists no audio files.")
            self.banks.append(AudioBank(files, self.sample_rate, cache=cache_audio))
            low, high = (float(v) for v in spec["snr_range"])
            if low > high:
                raise ValueError(f"NoiseMixer: category {name!r} has snr_range low > high.")
            self.snr_ranges.append((low, high))
            lo_n, hi_n = (int(v) for v in spec.get("num_sources", (1, 1)))
            if not 1 <= lo_n <= hi_n:
                raise ValueError(f"NoiseMixer: category {name!r} needs 1 <= num_sources[0] <= [1].")
            self.num_sources.append((lo_n, hi_n))
            weights.append(float(spec.get("weight", 1.0)))
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def extra_repr(self) -> str:
        parts = [
            f"{name}: {len(bank)} files, snr {rng}"
            for name, bank, rng in zip(self.names, self.banks, self.snr_ranges)
        ]
        return f"prob={self.prob}, " + "; ".join(parts)

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor | None = None, generator=None):
        """Return ``wavs`` with noise added to a random subset of items (same shape).

        Parameters
        ----------
        wavs : torch.Tensor
            ``(B, T)`` padded clean waveforms (any device).
        lens : torch.Tensor, optional
            ``(B,)`` relative lengths; noise is added to the valid part only.
        generator : torch.Generator, optional
            CPU generator for reproducible draws.
        """
        if wavs.dim() != 2:
            raise ValueError(f"NoiseMixer expects (B, T) waveforms, got {tuple(wavs.shape)}")
        batch, total = wavs.shape
        n_valid = relative_to_samples(lens, total, batch)
        apply = draw_uniform(0.0, 1.0, batch, generator) < self.prob
        device = generator.device if generator is not None else "cpu"
        category = torch.multinomial(
            self.weights.to(device), batch, replacement=True, generator=generator
        ).cpu()
        unit = draw_uniform(0.0, 1.0, batch, generator)
        chosen = torch.nonzero(apply & (n_valid > 0)).flatten().tolist()
        if not chosen:
            return wavs
        noises, snrs = [], []
        for i in chosen:
            c = int(category[i])
            low, high = self.snr_ranges[c]
            snrs.append(low + (high - low) * float(unit[i]))
            noises.append(self._draw_noise(c, int(n_valid[i]), total, generator))
        index = torch.tensor(chosen, device=wavs.device)
        noise = torch.stack(noises).to(wavs.device, wavs.dtype)
        mixed = mix_at_snr(
            wavs[index],
            noise,
            torch.tensor(snrs, dtype=torch.float64),
            lens=None if lens is None else lens.to(wavs.device)[index],
        )
        out = wavs.clone()
        out[index] = mixed
        return out

    def _draw_noise(self, category: int, length: int, total: int, generator) -> torch.Tensor:
        bank = self.banks[category]
        low, high = self.num_sources[category]
        device = generator.device if generator is not None else "cpu"
        count = int(torch.randint(low, high + 1, (1,), generator=generator, device=device))
        noise = torch.zeros(total)
        for _ in range(count):
            file = int(torch.randint(len(bank), (1,), generator=generator, device=device))
            noise[:length] += bank.crop(file, length, generator)
        return noise


__all__ = ["mix_at_snr", "NoiseMixer", "DINO_CATEGORIES"]
