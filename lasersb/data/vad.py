"""Kaldi-style energy voice activity detection, as hyperion applies it to speaker training audio.

hyperion's VoxCeleb recipes (``egs/voxceleb/dinossl.v1`` and ``v1.1``, branch
``persephone-dino``) run ``compute_energy_vad.py --cfg conf/vad_16k.yaml`` on every training
file (``hyperion/np/feats/energy_vad.py``, ``EnergyVAD``), then
``preprocess_audio_files.py --vad`` keeps only the speech samples of each file, and
``remove_short_audios.sh --min-len 4`` drops the files with less than 4 s of speech left. This
module computes the same decisions, vectorised with NumPy/SciPy:

1. the waveform on the int16 scale (hyperion's ``AudioReader``: ``wav_scale = 2**15 - 1``);
2. with ``snip_edges=False``, ``round(T / shift)`` frames: the signal is reflected by
   ``(length - shift) // 2`` samples at the start and to ``(frames - 1) * shift + length`` at
   the end;
3. Gaussian dither of standard deviation ``dither``, drawn from
   ``numpy.random.RandomState(seed=len(padded signal))`` (so it is deterministic per file);
4. DC blocking filter ``y[n] = x[n] - x[n-1] + 0.999 y[n-1]``;
5. the raw log energy of each frame ``log(sum x^2 + 1e-15)`` (no window, no pre-emphasis);
6. a frame is loud when its log energy exceeds
   ``energy_threshold + energy_mean_scale * mean(log energy)``;
7. a frame is speech when more than ``proportion_threshold`` of the loud decisions in a window
   of ``2 * frames_context + 1`` frames around it are loud (the window shrinks at the edges);
8. the frame decisions (100 per second) are resampled to one per sample with a Fourier
   resampling (:func:`scipy.signal.resample`) thresholded at 0.5.

The defaults are hyperion's ``conf/vad_16k.yaml`` (threshold 5.5, mean scale 0.5, proportion
0.12, context 2, ``snip_edges: false``) with ``EnergyVAD``'s default dither of 1; hyperion's
class defaults (threshold 5, context 0, proportion 0.6, ``snip_edges: true``) are not what its
recipes run.

:class:`EnergyVAD` gives the frame decisions, the sample mask and the speech segments;
:func:`format_segments` / :func:`parse_segments` store segments in a manifest column and
:func:`speech_only` keeps the speech samples of a waveform.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

__all__ = [
    "EnergyVAD",
    "format_segments",
    "mask_to_segments",
    "parse_segments",
    "smooth_decisions",
    "speech_only",
]

#: hyperion's AudioReader reads audio as float and multiplies it by this (int16 scale).
WAV_SCALE = 2**15 - 1


def smooth_decisions(loud: np.ndarray, context: int, proportion: float) -> np.ndarray:
    """Speech decisions: more than ``proportion`` of the loud frames in a centred window.

    The window has ``2 * context + 1`` frames; within ``context`` frames of an edge it holds
    only the frames that exist (the first frame's window has ``context + 1`` frames).

    Arguments
    ---------
    loud : numpy.ndarray
        ``(F,)`` boolean per-frame energy decisions.
    context : int
        Frames on each side of the centre frame.
    proportion : float
        Fraction of loud frames, strictly exceeded, that makes a frame speech.

    Returns
    -------
    numpy.ndarray
        ``(F,)`` boolean speech decisions.

    Example
    -------
    >>> loud = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    >>> smooth_decisions(loud, context=2, proportion=0.12).astype(int)
    array([0, 1, 1, 1, 1, 1, 0, 0, 0])
    >>> smooth_decisions(loud, context=1, proportion=0.4).astype(int)
    array([0, 0, 0, 0, 0, 0, 0, 0, 0])
    """
    loud = np.asarray(loud, dtype=bool)
    num_frames = len(loud)
    if context <= 0 or num_frames == 0:
        return loud.copy()
    context = min(int(context), (num_frames - 1) // 2)  # short inputs: the widest window that fits
    if context == 0:
        return loud.copy()
    window = 2 * context + 1
    counts = np.convolve(loud.astype(np.float64), np.ones(window), mode="same")
    sizes = np.full(num_frames, float(window))
    edge = np.arange(context + 1, window, dtype=np.float64)  # window sizes near the edges
    sizes[:context] = edge
    sizes[-context:] = edge[::-1]
    return counts / sizes > proportion


def mask_to_segments(mask: np.ndarray) -> np.ndarray:
    """``(N, 2)`` int64 ``[start, end)`` index ranges of the runs of ``True`` in ``mask``.

    Example
    -------
    >>> mask_to_segments(np.array([0, 1, 1, 0, 0, 1, 1, 1], dtype=bool)).tolist()
    [[1, 3], [5, 8]]
    >>> mask_to_segments(np.zeros(4, dtype=bool)).shape
    (0, 2)
    """
    mask = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return np.stack([starts, ends], axis=1).astype(np.int64)


def format_segments(segments) -> str:
    """Segments as a manifest cell: ``"start:end start:end"`` (samples, end exclusive).

    Example
    -------
    >>> format_segments([[1, 3], [5, 8]])
    '1:3 5:8'
    >>> format_segments(np.zeros((0, 2), dtype=np.int64))
    ''
    """
    return " ".join(f"{int(start)}:{int(end)}" for start, end in segments)


def parse_segments(text: str) -> np.ndarray:
    """Inverse of :func:`format_segments`: ``(N, 2)`` int64 array.

    Example
    -------
    >>> parse_segments("1:3 5:8").tolist()
    [[1, 3], [5, 8]]
    >>> parse_segments("").shape
    (0, 2)
    """
    pairs = [item.split(":") for item in str(text).split()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"speech segments must read 'start:end start:end ...', got {text!r}")
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def speech_only(wav, segments):
    """Concatenation of the ``[start, end)`` segments of a 1-D waveform (NumPy or torch).

    Example
    -------
    >>> speech_only(np.arange(10), [[1, 3], [5, 8]]).tolist()
    [1, 2, 5, 6, 7]
    """
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    if len(segments) == 0:
        return wav[:0]
    index = np.concatenate([np.arange(start, end) for start, end in segments])
    if hasattr(wav, "index_select"):  # torch.Tensor
        import torch

        return wav.index_select(0, torch.from_numpy(index).to(wav.device))
    return wav[index]


class EnergyVAD:
    """Kaldi energy VAD with hyperion's recipe settings (see the module docstring).

    Arguments
    ---------
    sample_rate : int
        Sample rate of the waveforms (Hz).
    frame_length_ms, frame_shift_ms : float
        Frame length and shift in milliseconds (25, 10).
    dither : float
        Standard deviation of the Gaussian dither, on the int16 scale (0: none).
    snip_edges : bool
        ``True``: only frames that fit in the signal; ``False``: ``round(T / shift)`` frames
        over a reflected signal (hyperion's recipe).
    energy_threshold : float
        Constant term of the log-energy threshold (``vad_energy_threshold``).
    energy_mean_scale : float
        Weight of the utterance's mean log energy in the threshold (``vad_energy_mean_scale``).
    frames_context : int
        Frames on each side of the smoothing window (``vad_frames_context``).
    proportion_threshold : float
        Fraction of loud frames in the window that makes a frame speech
        (``vad_proportion_threshold``).
    wav_scale : float
        Scale applied to float waveforms in [-1, 1] before the VAD (int16 range, as hyperion).

    Example
    -------
    >>> rng = np.random.RandomState(0)
    >>> wav = np.concatenate([np.zeros(16000), 0.3 * rng.randn(16000), np.zeros(16000)])
    >>> vad = EnergyVAD()
    >>> frames = vad.frames(wav)
    >>> len(frames), np.flatnonzero(frames)[[0, -1]].tolist()
    (300, [97, 215])
    >>> vad.segments(wav).tolist()
    [[15440, 34481]]

    Speech starts two frames (the context) before the noise burst at frame 100; it ends 16
    frames after it because the DC filter's output decays slowly (time constant 1,000
    samples) after a loud signal stops, as in hyperion.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        dither: float = 1.0,
        snip_edges: bool = False,
        energy_threshold: float = 5.5,
        energy_mean_scale: float = 0.5,
        frames_context: int = 2,
        proportion_threshold: float = 0.12,
        wav_scale: float = WAV_SCALE,
    ):
        if energy_mean_scale < 0 or frames_context < 0:
            raise ValueError("EnergyVAD: energy_mean_scale and frames_context must be >= 0")
        if not 0 < proportion_threshold < 1:
            raise ValueError(
                f"EnergyVAD: proportion_threshold must be in (0, 1), got {proportion_threshold}"
            )
        self.sample_rate = int(sample_rate)
        self.frame_length_ms = float(frame_length_ms)
        self.frame_shift_ms = float(frame_shift_ms)
        self.dither = float(dither)
        self.snip_edges = bool(snip_edges)
        self.energy_threshold = float(energy_threshold)
        self.energy_mean_scale = float(energy_mean_scale)
        self.frames_context = int(frames_context)
        self.proportion_threshold = float(proportion_threshold)
        self.wav_scale = float(wav_scale)
        self.frame_length = int(np.floor(frame_length_ms * sample_rate / 1000))
        self.frame_shift = int(np.floor(frame_shift_ms * sample_rate / 1000))

    def options(self) -> dict:
        """The settings as a JSON-able dict (recorded by the data preparation).

        Example
        -------
        >>> EnergyVAD().options()["energy_threshold"]
        5.5
        """
        names = (
            "sample_rate", "frame_length_ms", "frame_shift_ms", "dither", "snip_edges",
            "energy_threshold", "energy_mean_scale", "frames_context", "proportion_threshold",
            "wav_scale",
        )  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        return "EnergyVAD(" + ", ".join(f"{k}={v!r}" for k, v in self.options().items()) + ")"

    def num_frames(self, num_samples: int) -> int:
        """Number of frames of a waveform of ``num_samples`` samples.

        Example
        -------
        >>> EnergyVAD().num_frames(16000), EnergyVAD(snip_edges=True).num_frames(16000)
        (100, 98)
        """
        if self.snip_edges:
            return max(0, (num_samples - self.frame_length) // self.frame_shift + 1)
        return int(np.round(num_samples / self.frame_shift))

    def log_energy(self, wav) -> np.ndarray:
        """Per-frame raw log energy of a float waveform in [-1, 1] (steps 1-5).

        Example
        -------
        >>> e = EnergyVAD(dither=0).log_energy(np.full(1600, 0.01))
        >>> e.shape
        (10,)
        """
        x = np.asarray(wav, dtype=np.float64).reshape(-1) * self.wav_scale
        length, shift = self.frame_length, self.frame_shift
        num_frames = self.num_frames(len(x))
        if num_frames == 0:
            return np.zeros(0)
        if not self.snip_edges:
            padded = (num_frames - 1) * shift + length
            left = (length - shift) // 2
            x = np.pad(x, (left, padded - len(x) - left), mode="reflect")
        if self.dither > 0:
            x = x + self.dither * np.random.RandomState(seed=len(x)).randn(len(x))
        x = signal.lfilter([1.0, -1.0], [1.0, -0.999], x)
        frames = np.lib.stride_tricks.sliding_window_view(x * x, length)[::shift][:num_frames]
        return np.log(frames.sum(axis=1) + 1e-15)

    def frames(self, wav) -> np.ndarray:
        """``(F,)`` boolean speech decisions, one per frame shift (steps 1-7)."""
        log_e = self.log_energy(wav)
        if len(log_e) == 0:
            return np.zeros(0, dtype=bool)
        threshold = self.energy_threshold + self.energy_mean_scale * log_e.mean()
        return smooth_decisions(log_e > threshold, self.frames_context, self.proportion_threshold)

    def sample_mask(self, wav, frames=None) -> np.ndarray:
        """``(T,)`` boolean speech mask of the samples (step 8; ``frames`` if computed).

        Example
        -------
        >>> int(EnergyVAD().sample_mask(np.zeros(1600), frames=np.array([0, 1] * 5)).sum())
        800
        """
        num_samples = len(np.asarray(wav).reshape(-1))
        if frames is None:
            frames = self.frames(wav)
        if num_samples == 0 or len(frames) == 0:
            return np.zeros(num_samples, dtype=bool)
        return signal.resample(np.asarray(frames, dtype=np.float64), num_samples) > 0.5

    def segments(self, wav) -> np.ndarray:
        """``(N, 2)`` int64 ``[start, end)`` sample ranges of speech."""
        return mask_to_segments(self.sample_mask(wav))
