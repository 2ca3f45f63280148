"""Spin's speaker perturbation as the release computes it: Praat's "Change gender" per utterance.

The Spin release (``vectominist/spin``, ``src/data/dataset.py`` ``perturb_speaker`` and
``src/data/audio.py``, from ContentVec / NANSY) perturbs the second view of every training
utterance on the CPU, in the data-loader workers, after the random crop:

1. Praat's "Change gender" (through ``praat-parselmouth``, the library the release calls): the
   pitch track (``To Pitch (ac)``, floor/ceiling of the speaker, time step ``0.8 / floor``) gives
   the median F0; the sound is re-synthesised with formant shift ratio ``r_f``, new pitch median
   ``median * r_p`` and pitch range factor ``r_r``, duration unchanged. ``r_f ~ U[1, 1.4]``,
   ``r_p ~ U[1, 2]``, ``r_r ~ U[1, 1.5]``, each inverted with probability 1/2, drawn in that
   order. A Praat error leaves the utterance unperturbed (as the release);
2. a 10-band random equaliser (low shelf, 8 peaking filters, high shelf at 60 Hz - 7.6 kHz,
   log-spaced; gains ``U[-12, 12]`` dB, ``Q = 2 (5/2)^u``), applied with SciPy's ``sosfilt``;
3. clipping to ``[-1, 1]``.

Praat's re-synthesis draws random numbers from Praat's own generator; here it is seeded from the
utterance's NumPy generator, so a run reproduces (the release leaves it unseeded). One
difference: the release reads each LibriSpeech speaker's pitch floor and ceiling from
ContentVec's ``spk2info.dict`` (not distributed with the corpus); here one floor and ceiling
serve every speaker (Praat's "Change gender" defaults, 75 and 600 Hz, unless set).

:class:`SpeakerViewCollate` is the ``collate_fn`` that does the crop and this perturbation in
the workers for :class:`lasersb.brains.spin.SpinBrain` (``speaker_perturbation: praat``).
:class:`lasersb.augment.speaker.SpeakerPerturbation` is the batched on-device approximation.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from lasersb.augment.speaker import biquad_coefficients

__all__ = ["PraatSpeakerPerturbation", "SpeakerViewCollate", "change_gender"]


def _parselmouth():
    try:
        import parselmouth
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "speaker_perturbation: praat needs praat-parselmouth (pip install "
            "praat-parselmouth, in requirements.txt); or set speaker_perturbation: batched."
        ) from err
    return parselmouth


def change_gender(wav, sample_rate, formant_ratio, pitch_ratio, range_ratio,
                  pitch_floor=75.0, pitch_ceiling=600.0, seed=None):  # fmt: skip
    """Praat's "Change gender" of one utterance, as the Spin release calls it.

    Arguments
    ---------
    wav : numpy.ndarray
        ``(T,)`` waveform.
    sample_rate : int
        Sampling rate.
    formant_ratio : float
        Formant shift ratio (``1.2``: formants 20 % higher).
    pitch_ratio : float
        The new pitch median is the measured median times this.
    range_ratio : float
        Pitch range factor (the F0 contour stretched around its median).
    pitch_floor, pitch_ceiling : float
        Range of the pitch analysis (Hz).
    seed : int, optional
        Seed of Praat's random generator (its overlap-add re-synthesis draws random numbers,
        so two calls differ otherwise; the release does not seed it).

    Returns
    -------
    numpy.ndarray
        ``(T,)`` float64 (same duration).

    Example
    -------
    >>> t = np.arange(16000) / 16000
    >>> vowel = 0.3 * np.sign(np.sin(2 * np.pi * 120 * t))
    >>> change_gender(vowel, 16000, 1.2, 1.5, 1.0).shape
    (16000,)
    """
    parselmouth = _parselmouth()
    if seed is not None:
        parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
    sound = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(
        pitch_floor=pitch_floor, pitch_ceiling=pitch_ceiling, time_step=0.8 / pitch_floor
    )
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 != 0]
    if voiced.size == 0:
        raise RuntimeError("no voiced frame: Praat finds no pitch median")
    median = float(np.median(voiced))
    out = parselmouth.praat.call(
        [sound, pitch], "Change gender", formant_ratio, median * pitch_ratio, range_ratio, 1.0
    )
    return out.values.squeeze(0)


class PraatSpeakerPerturbation:
    """The Spin release's speaker perturbation of one utterance (see the module docstring).

    Arguments
    ---------
    sample_rate : int
        Sampling rate.
    formant_range, pitch_range, pitch_range_factor : float
        Ratios are drawn from ``U[1, x]`` and inverted with probability 1/2 (release: 1.4, 2,
        1.5).
    pitch_floor, pitch_ceiling : float
        Pitch analysis range (the release: per speaker; here the same for all).
    eq_gain_db : float
        Equaliser gains ``U[-eq_gain_db, eq_gain_db]`` dB (release: 12).
    eq_q_range : tuple of float
        ``Q = q_min (q_max / q_min) ** u`` (release: ``(2, 5)``).
    eq_freq_range : tuple of float
        Lowest and highest band frequency (release: 60 Hz, 7.6 kHz, 10 log-spaced bands).
    eq_bands : int
        Number of equaliser bands.

    Example
    -------
    >>> perturb = PraatSpeakerPerturbation()
    >>> t = np.arange(16000) / 16000
    >>> y = perturb(0.3 * np.sign(np.sin(2 * np.pi * 120 * t)), np.random.default_rng(0))
    >>> y.shape, y.dtype, float(np.abs(y).max()) <= 1.0
    ((16000,), dtype('float32'), True)
    """

    def __init__(self, sample_rate=16000, formant_range=1.4, pitch_range=2.0,
                 pitch_range_factor=1.5, pitch_floor=75.0, pitch_ceiling=600.0,
                 eq_gain_db=12.0, eq_q_range=(2.0, 5.0), eq_freq_range=(60.0, 7600.0),
                 eq_bands=10):  # fmt: skip
        self.sample_rate = int(sample_rate)
        self.formant_range = float(formant_range)
        self.pitch_range = float(pitch_range)
        self.pitch_range_factor = float(pitch_range_factor)
        self.pitch_floor = float(pitch_floor)
        self.pitch_ceiling = float(pitch_ceiling)
        self.eq_gain_db = float(eq_gain_db)
        self.eq_q_range = (float(eq_q_range[0]), float(eq_q_range[1]))
        low, high = float(eq_freq_range[0]), float(eq_freq_range[1])
        self.eq_centres = np.exp(np.linspace(np.log(low), np.log(high), int(eq_bands)))

    @staticmethod
    def _ratio(rng, upper):
        ratio = rng.uniform(1.0, upper)
        return ratio if rng.random() > 0.5 else 1.0 / ratio

    def draw(self, rng):
        """``(formant ratio, pitch ratio, pitch range factor)`` in the release's order."""
        return (
            self._ratio(rng, self.formant_range),
            self._ratio(rng, self.pitch_range),
            self._ratio(rng, self.pitch_range_factor),
        )

    def equaliser_sections(self, rng):
        """``(bands, 6)`` second-order sections (``a0 = 1``) of a random equaliser."""
        bands = self.eq_centres.shape[0]
        u = rng.uniform(0.0, 1.0, size=bands)
        q = self.eq_q_range[0] * (self.eq_q_range[1] / self.eq_q_range[0]) ** u
        gains = rng.uniform(-self.eq_gain_db, self.eq_gain_db, size=bands)
        kinds = ["lowshelf"] + ["peaking"] * (bands - 2) + ["highshelf"]
        sections = []
        for kind, gain, freq, quality in zip(kinds, gains, self.eq_centres, q):
            c = biquad_coefficients(
                kind,
                torch.tensor([gain], dtype=torch.float64),
                torch.tensor([freq], dtype=torch.float64),
                torch.tensor([quality], dtype=torch.float64),
                self.sample_rate,
            )[0].numpy()
            sections.append(c / c[3])
        return np.stack(sections)

    def __call__(self, wav, rng, ratios=None):
        """Perturb one ``(T,)`` waveform with ``rng`` (a ``numpy.random.Generator``).

        ``ratios`` = ``(formant, pitch, range)`` skips the draw (for measurements).
        """
        from scipy.signal import sosfilt

        wav = np.asarray(wav, dtype=np.float64)
        formant, pitch, spread = self.draw(rng) if ratios is None else ratios
        seed = int(rng.integers(1, 2**31 - 1))  # Praat's own generator, so runs reproduce
        try:
            out = change_gender(wav, self.sample_rate, formant, pitch, spread,
                                self.pitch_floor, self.pitch_ceiling, seed)  # fmt: skip
        except (RuntimeError, UserWarning):
            out = wav.copy()  # the release keeps the utterance when Praat fails
        if out.shape[0] != wav.shape[0]:  # Praat's resampling may differ by a sample
            out = np.pad(out, (0, max(0, wav.shape[0] - out.shape[0])))[: wav.shape[0]]
        out = sosfilt(self.equaliser_sections(rng), out)
        return np.clip(out, -1.0, 1.0).astype(np.float32)


class SpeakerViewCollate:
    """``collate_fn`` of Spin with Praat: crop, perturb, pad (runs in the data-loader workers).

    Each utterance is cropped to at most ``crop_samples`` at a random offset (the release's
    ``random_crop_len``), then perturbed by ``perturbation``; the batch is SpeechBrain's
    ``PaddedBatch`` with ``sig`` (the crops) and ``sig_perturbed`` (same lengths).

    Arguments
    ---------
    perturbation : PraatSpeakerPerturbation
        The per-utterance perturbation.
    crop_samples : int
        Longest crop (``random_crop_samples``).
    seed : int, optional
        ``None`` (training): the draws come from the worker's torch RNG (which the loader
        seeds), so a run is reproducible. An int (validation): the draws of a batch are seeded
        by ``seed`` and its utterance ids, the same views at every validation.

    Example
    -------
    >>> collate = SpeakerViewCollate(PraatSpeakerPerturbation(), crop_samples=8000, seed=0)
    >>> t = np.arange(12000) / 16000
    >>> wav = torch.tensor(0.3 * np.sign(np.sin(2 * np.pi * 120 * t)), dtype=torch.float32)
    >>> batch = collate([{"id": "a", "sig": wav}, {"id": "b", "sig": wav[:6000]}])
    >>> batch.sig.data.shape, batch.sig_perturbed.data.shape, batch.sig.lengths.tolist()
    (torch.Size([2, 8000]), torch.Size([2, 8000]), [1.0, 0.75])
    """

    def __init__(self, perturbation, crop_samples, seed=None):
        self.perturbation = perturbation
        self.crop_samples = int(crop_samples)
        self.seed = seed

    def _rng(self, ids):
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        key = zlib.crc32("\n".join(ids).encode("utf-8"))
        return np.random.default_rng([int(self.seed), key])

    def __call__(self, examples):
        from speechbrain.dataio.batch import PaddedBatch

        rng = self._rng([str(example["id"]) for example in examples])
        out = []
        for example in examples:
            wav = torch.as_tensor(example["sig"], dtype=torch.float32)
            if self.crop_samples > 0 and wav.shape[0] > self.crop_samples:
                start = int(rng.integers(0, wav.shape[0] - self.crop_samples))
                wav = wav[start : start + self.crop_samples]
            perturbed = torch.from_numpy(self.perturbation(wav.numpy(), rng))
            out.append({**example, "sig": wav, "sig_perturbed": perturbed})
        return PaddedBatch(out)
