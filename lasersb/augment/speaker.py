"""Spin's speaker perturbation: random formant shift, pitch shift and parametric equaliser.

Spin (Chang, Liu & Glass, Interspeech 2023; release ``vectominist/spin``, ``src/data/dataset.py``
and ``src/data/audio.py``, taken from ContentVec / NANSY) perturbs the second view of every
utterance with, per utterance:

1. Praat's "Change gender": formant shift ratio ``r_f ~ U[1, 1.4]``, new pitch median
   ``f0_median * r_p`` with ``r_p ~ U[1, 2]``, pitch range factor ``r_r ~ U[1, 1.5]``, each
   inverted with probability 1/2, duration unchanged;
2. a 10-band parametric equaliser: a low shelf, eight peaking filters and a high shelf at
   centre frequencies log-spaced from 60 Hz to 7.6 kHz, gains ``U[-12, 12]`` dB,
   ``Q = 2 (5/2)^u``, ``u ~ U[0, 1]`` (RBJ cookbook biquads, applied causally with ``sosfilt``);
3. clipping to ``[-1, 1]``.

Here everything runs batched on the waveforms' device (the release runs Praat and SciPy per
utterance in the data loader; :mod:`lasersb.augment.praat` does that, the default of
``hparams/spin.yaml``; bench/speaker_perturbation.py measures both). Where this differs from the
release:

- **pitch**: every frequency is scaled by ``r_p`` with the phase-vocoder pitch shift of
  :func:`lasersb.augment.pitch.speed_pitch_perturb_items` (``r_p`` rounded to a quarter
  semitone, so that items share resampling kernels), instead of Praat's PSOLA re-synthesis
  around the median F0; the median F0 is multiplied by ``r_p`` in both;
- **pitch range** (``r_r``) is not applied: it needs an F0 track, and the release's effect is a
  stretch of the F0 contour around its median;
- **formants**: the spectral envelope (cepstral lifter of the log-magnitude STFT, 32 ms frames)
  of the pitch-shifted signal is replaced by the original envelope warped along frequency by
  ``r_f`` (Praat resamples the signal by ``r_f`` and restores the pitch by PSOLA);
- **equaliser**: the cascade's exact complex frequency response is applied by FFT over twice
  the padded length (the IIR tail beyond that is dropped), instead of ``sosfilt``;
- no per-speaker pitch floor/ceiling (``spk2info.dict``) is needed, since no F0 is tracked.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lasersb.augment.lengths import draw_uniform, relative_to_samples
from lasersb.augment.pitch import default_n_fft, speed_pitch_perturb_items
from lasersb.augment.speed import valid_mask


def _reciprocal_half(values: torch.Tensor, generator=None) -> torch.Tensor:
    """Invert each ratio with probability 1/2 (the release's coin flip)."""
    device = generator.device if generator is not None else "cpu"
    coin = torch.rand(values.shape[0], generator=generator, device=device).cpu() > 0.5
    return torch.where(coin, values, 1.0 / values)


# ------------------------------------------------------------------ parametric equaliser
def biquad_coefficients(kind: str, gain_db, freq, q, sample_rate: int):
    """RBJ-cookbook biquad coefficients ``(b0, b1, b2, a0, a1, a2)``, batched over items.

    Arguments
    ---------
    kind : str
        ``"lowshelf"``, ``"peaking"`` or ``"highshelf"``.
    gain_db, freq, q : torch.Tensor
        ``(...)`` gain in dB, centre/corner frequency in Hz, quality factor.
    sample_rate : int
        Sampling rate in Hz.

    Returns
    -------
    torch.Tensor
        ``(..., 6)`` coefficients.

    Example
    -------
    >>> c = biquad_coefficients("peaking", torch.tensor([0.0]), torch.tensor([1000.0]),
    ...                         torch.tensor([2.0]), 16000)
    >>> torch.allclose(c[0, :3], c[0, 3:])  # 0 dB: the identity filter
    True
    """
    a = torch.pow(10.0, gain_db / 40.0)
    w0 = 2 * math.pi * freq.clamp_min(2.0) / sample_rate
    cos, sin = torch.cos(w0), torch.sin(w0)
    if kind == "peaking":
        alpha = sin / (2 * q)
        coeffs = (1 + alpha * a, -2 * cos, 1 - alpha * a, 1 + alpha / a, -2 * cos, 1 - alpha / a)
    elif kind in ("lowshelf", "highshelf"):
        beta = sin * torch.sqrt(a) / q
        sign = 1.0 if kind == "lowshelf" else -1.0
        ap, am = a + 1, a - 1
        coeffs = (
            a * (ap - sign * am * cos + beta),
            sign * 2 * a * (am - sign * ap * cos),
            a * (ap - sign * am * cos - beta),
            ap + sign * am * cos + beta,
            -sign * 2 * (am + sign * ap * cos),
            ap + sign * am * cos - beta,
        )
    else:
        raise ValueError(f"biquad kind must be lowshelf, peaking or highshelf, got {kind!r}")
    return torch.stack(coeffs, dim=-1)


def equaliser_response(sections: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex frequency response ``(B, n_fft // 2 + 1)`` of cascaded biquads ``(B, S, 6)``.

    Example
    -------
    >>> flat = torch.tensor([[[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]])
    >>> torch.allclose(equaliser_response(flat, 8).abs().float(), torch.ones(1, 5))
    True
    """
    freqs = torch.arange(n_fft // 2 + 1, device=sections.device, dtype=torch.float64)
    z1 = torch.exp(-2j * math.pi * freqs / n_fft)  # e^{-jw}
    z2 = z1 * z1
    s = sections.to(torch.float64).unsqueeze(-2)  # (B, S, 1, 6)
    num = s[..., 0] + s[..., 1] * z1 + s[..., 2] * z2
    den = s[..., 3] + s[..., 4] * z1 + s[..., 5] * z2
    return (num / den).prod(dim=1)


class RandomEqualiser(nn.Module):
    """Spin's random 10-band parametric equaliser, batched (see the module docstring).

    Arguments
    ---------
    sample_rate : int
        Sampling rate.
    gain_db : float
        Gains are drawn from ``U[-gain_db, gain_db]`` (release: 12).
    q_range : tuple of float
        ``Q = q_min (q_max / q_min) ** u`` (release: ``(2, 5)``).
    freq_range : tuple of float
        Lowest and highest centre frequency (release: 60 Hz and 7.6 kHz, 10 log-spaced bands).
    bands : int
        Number of bands: one low shelf, ``bands - 2`` peaking filters, one high shelf.

    Example
    -------
    >>> eq = RandomEqualiser()
    >>> y = eq(torch.randn(2, 8000), torch.tensor([1.0, 0.5]), torch.Generator().manual_seed(0))
    >>> y.shape, bool((y[1, 4000:] == 0).all())
    (torch.Size([2, 8000]), True)
    """

    def __init__(self, sample_rate=16000, gain_db=12.0, q_range=(2.0, 5.0),
                 freq_range=(60.0, 7600.0), bands=10):  # fmt: skip
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.gain_db = float(gain_db)
        self.q_range = (float(q_range[0]), float(q_range[1]))
        self.bands = int(bands)
        low, high = float(freq_range[0]), float(freq_range[1])
        self.register_buffer(
            "centres", torch.exp(torch.linspace(math.log(low), math.log(high), self.bands))
        )

    def draw_sections(self, batch: int, generator=None) -> torch.Tensor:
        """``(B, bands, 6)`` biquad coefficients of ``batch`` random equalisers."""
        count = batch * self.bands
        u = draw_uniform(0.0, 1.0, count, generator).view(batch, self.bands)
        q = self.q_range[0] * (self.q_range[1] / self.q_range[0]) ** u
        gains = draw_uniform(-self.gain_db, self.gain_db, count, generator).view(batch, self.bands)
        freqs = self.centres.double().cpu().expand(batch, -1)
        kinds = ["lowshelf"] + ["peaking"] * (self.bands - 2) + ["highshelf"]
        sections = [
            biquad_coefficients(kind, gains[:, i], freqs[:, i], q[:, i], self.sample_rate)
            for i, kind in enumerate(kinds)
        ]
        return torch.stack(sections, dim=1)

    def forward(self, wavs, lens=None, generator=None):
        """Equalise ``(B, T)`` waveforms (zero beyond each item's length)."""
        batch, total = wavs.shape
        n = relative_to_samples(lens, total, batch)
        x = wavs * valid_mask(n, total, wavs.device).to(wavs.dtype)
        n_fft = 1 << max(1, (2 * total - 1).bit_length())
        response = equaliser_response(self.draw_sections(batch, generator).to(wavs.device), n_fft)
        spectrum = torch.fft.rfft(x.double(), n=n_fft)
        y = torch.fft.irfft(spectrum * response, n=n_fft)[:, :total].to(wavs.dtype)
        return y * valid_mask(n, total, wavs.device).to(wavs.dtype)


# ------------------------------------------------------------------ formant shift
def spectral_envelope(mag: torch.Tensor, lifter: int) -> torch.Tensor:
    """Smooth envelope of ``(..., F, frames)`` magnitudes by cepstral liftering."""
    log_mag = torch.log(mag.clamp_min(1e-7)).transpose(-1, -2)  # (..., frames, F)
    cepstrum = torch.fft.irfft(log_mag, dim=-1)
    keep = torch.zeros(cepstrum.shape[-1], device=mag.device, dtype=cepstrum.dtype)
    keep[:lifter] = 1.0
    keep[-lifter + 1 :] = 1.0
    smooth = torch.fft.rfft(cepstrum * keep, dim=-1).real
    return torch.exp(smooth).transpose(-1, -2)


def warp_frequency(values: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """``out[b, f] = values[b, f / ratios[b]]`` along the frequency axis ``-2`` (linear interp.).

    Example
    -------
    >>> v = torch.arange(5.0).view(1, 5, 1)
    >>> warp_frequency(v, torch.tensor([2.0])).flatten().tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    bins = values.shape[-2]
    pos = torch.arange(bins, device=values.device, dtype=values.dtype)
    src = (pos.unsqueeze(0) / ratios.to(values.device, values.dtype).unsqueeze(1)).clamp(
        0, bins - 1
    )
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=bins - 1)
    frac = (src - lo.to(src.dtype)).unsqueeze(-1)
    idx_lo = lo.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    idx_hi = hi.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    return values.gather(1, idx_lo) * (1 - frac) + values.gather(1, idx_hi) * frac


def formant_shift(wavs, reference, formant_ratios, sample_rate=16000, lifter_ms=1.0):
    """Give ``wavs`` the spectral envelope of ``reference`` warped by ``formant_ratios``.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, T)`` waveforms whose fine (harmonic) structure is kept (e.g. pitch-shifted).
    reference : torch.Tensor
        ``(B, T)`` waveforms whose envelope is warped (the originals).
    formant_ratios : torch.Tensor
        ``(B,)`` factors (``1.2``: formants 20 % higher).
    sample_rate : int
        Sampling rate (32 ms STFT frames, hop 8 ms).
    lifter_ms : float
        Quefrency cut-off of the envelope (1 ms, below the 2 ms period of a 500 Hz F0, so the
        harmonics are smoothed out).

    Returns
    -------
    torch.Tensor
        ``(B, T)``.
    """
    n_fft = default_n_fft(sample_rate)
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=wavs.device, dtype=torch.float32)

    def stft(x):
        return torch.stft(x.float(), n_fft, hop, window=window, center=True, return_complex=True)

    spec = stft(wavs)
    lifter = max(2, int(round(lifter_ms * 1e-3 * sample_rate)))
    env_now = spectral_envelope(spec.abs(), lifter)
    env_target = warp_frequency(spectral_envelope(stft(reference).abs(), lifter), formant_ratios)
    spec = spec * (env_target / env_now.clamp_min(1e-7))
    out = torch.istft(spec, n_fft, hop, window=window, center=True, length=wavs.shape[1])
    return out.to(wavs.dtype)


class SpeakerPerturbation(nn.Module):
    """Spin's speaker perturbation of a batch: formant shift, pitch shift, equaliser, clipping.

    Arguments
    ---------
    sample_rate : int
        Sampling rate.
    formant_range : float
        Formant ratio ``U[1, formant_range]``, inverted with probability 1/2 (release: 1.4).
    pitch_range : float
        Pitch ratio ``U[1, pitch_range]``, inverted with probability 1/2 (release: 2).
    pitch_step : float
        Semitone grid the pitch shift is rounded to (shared kernels between items).
    equaliser : RandomEqualiser, optional
        ``None``: no equaliser.

    Example
    -------
    >>> perturb = SpeakerPerturbation()
    >>> wavs, lens = 0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.75])
    >>> y = perturb(wavs, lens, generator=torch.Generator().manual_seed(0))
    >>> y.shape, bool((y[1, 6000:] == 0).all()), float(y.abs().max()) <= 1.0
    (torch.Size([2, 8000]), True, True)
    """

    def __init__(self, sample_rate=16000, formant_range=1.4, pitch_range=2.0, pitch_step=0.25,
                 equaliser=None):  # fmt: skip
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.formant_range = float(formant_range)
        self.pitch_range = float(pitch_range)
        self.pitch_step = float(pitch_step)
        self.equaliser = equaliser

    def draw(self, batch: int, generator=None):
        """Per-item ``(formant ratios, pitch shifts in semitones)`` (CPU)."""
        formant = _reciprocal_half(
            draw_uniform(1.0, self.formant_range, batch, generator), generator
        )
        pitch = _reciprocal_half(draw_uniform(1.0, self.pitch_range, batch, generator), generator)
        semitones = 12.0 * torch.log2(pitch)
        semitones = torch.round(semitones / self.pitch_step) * self.pitch_step
        return formant, semitones

    def forward(self, wavs, lens=None, generator=None, formant=None, semitones=None):
        """Perturb ``(B, T)`` waveforms (same shape and lengths); ratios drawn unless given."""
        batch, total = wavs.shape
        n = relative_to_samples(lens, total, batch)
        drawn_formant, drawn_semitones = self.draw(batch, generator)
        formant = (
            drawn_formant if formant is None else torch.as_tensor(formant, dtype=torch.float64)
        )
        semitones = drawn_semitones if semitones is None else torch.as_tensor(semitones)
        mask = valid_mask(n, total, wavs.device).to(wavs.dtype)
        original = wavs * mask
        shifted, _ = speed_pitch_perturb_items(
            original, n, [1.0] * batch, semitones.tolist(), self.sample_rate, min_length=total
        )
        shifted = shifted[:, :total]
        y = formant_shift(shifted, original, formant, self.sample_rate) * mask
        if self.equaliser is not None:
            y = self.equaliser(y, lens, generator)
        return y.clamp(-1.0, 1.0) * mask
