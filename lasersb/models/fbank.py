"""80-dim log Mel filterbanks with short-time (sliding-window) mean normalisation, batched.

The front-end of the speaker-embedding trunks (``lasersb.models.resnet``): SpeechBrain's
:class:`speechbrain.lobes.features.Fbank` (25 ms Hamming windows every 10 ms, log Mel energies)
followed by Kaldi-style ``apply-cmvn-sliding --center=true``: every frame has the mean of the
``cmn_window`` frames around it (3 s by default) subtracted, using only the valid frames of its
own utterance, so padding in a batch does not change the features of the shorter utterances.
"""

from __future__ import annotations

import torch
from speechbrain.lobes.features import Fbank
from torch import nn


def frame_counts(num_samples, hop_length: int, max_frames: int | None = None) -> torch.Tensor:
    """Valid frames of a centred STFT (``torch.stft(center=True)``) for each sample count.

    Arguments
    ---------
    num_samples : torch.Tensor or list of int
        Valid samples of each utterance.
    hop_length : int
        Hop in samples.
    max_frames : int, optional
        Frames of the padded batch (the counts are clipped to it).

    Returns
    -------
    torch.LongTensor
        ``num_samples // hop_length + 1`` per utterance.

    Example
    -------
    >>> frame_counts(torch.tensor([16000, 800]), 160).tolist()
    [101, 6]
    """
    num_samples = torch.as_tensor(num_samples).long()
    frames = num_samples // int(hop_length) + 1
    if max_frames is not None:
        frames = frames.clamp(max=int(max_frames))
    return frames.clamp(min=1)


def sliding_mean_normalisation(
    feats: torch.Tensor, frame_lens=None, window: int = 300, center: bool = True
) -> torch.Tensor:
    """Subtract from each frame the mean of a window of frames around it (per utterance).

    Follows Kaldi's ``apply-cmvn-sliding`` (means only): with ``center=True`` the window is
    centred on the frame and shifted to stay inside the utterance, so it always holds
    ``min(window, length)`` frames; with ``center=False`` it holds the ``window`` frames that
    end at the current one. Padded frames (beyond ``frame_lens``) are set to zero.

    Arguments
    ---------
    feats : torch.Tensor
        ``(B, T, D)`` features.
    frame_lens : torch.Tensor, optional
        ``(B,)`` valid frames per utterance (all ``T`` when omitted).
    window : int
        Window length in frames (300 = 3 s at a 10 ms hop).
    center : bool
        Centred window (Kaldi's ``--center=true``) or a causal one.

    Returns
    -------
    torch.Tensor
        ``(B, T, D)`` normalised features.

    Example
    -------
    >>> x = torch.arange(10.0).view(1, 10, 1)
    >>> sliding_mean_normalisation(x, window=3).flatten().tolist()
    [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    >>> y = sliding_mean_normalisation(x, torch.tensor([4]), window=100)
    >>> y.flatten().tolist()
    [-1.5, -0.5, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be (B, T, D), got shape {tuple(feats.shape)}")
    batch, frames, dim = feats.shape
    device = feats.device
    if frame_lens is None:
        lens = torch.full((batch,), frames, dtype=torch.long, device=device)
    else:
        lens = torch.as_tensor(frame_lens, device=device).long().clamp(1, frames)
    window = max(1, int(window))
    t = torch.arange(frames, device=device).unsqueeze(0)  # (1, T)
    n = lens.unsqueeze(1)  # (B, 1)
    if center:
        start = t - window // 2
        end = start + window
        low = (-start).clamp(min=0)
        start, end = start + low, end + low
        high = (end - n).clamp(min=0)
        start, end = (start - high).clamp(min=0), end - high
    else:
        end = torch.minimum(t + 1, n)
        start = (end - window).clamp(min=0)
    valid = t < n  # (B, T)
    x = feats.float() * valid.unsqueeze(-1)
    cumsum = torch.cat([x.new_zeros(batch, 1, dim), x.cumsum(dim=1)], dim=1)  # (B, T+1, D)
    end = end.expand(batch, frames)
    start = start.expand(batch, frames)
    gather = lambda idx: torch.gather(cumsum, 1, idx.unsqueeze(-1).expand(batch, frames, dim))  # noqa: E731
    count = (end - start).clamp(min=1).unsqueeze(-1).to(x.dtype)
    mean = (gather(end) - gather(start)) / count
    out = torch.where(valid.unsqueeze(-1), x - mean, torch.zeros_like(x))
    return out.to(feats.dtype)


class LogFbankSTMN(nn.Module):
    """Log Mel filterbanks (SpeechBrain ``Fbank``) + short-time mean normalisation.

    Arguments
    ---------
    sample_rate : int
        Input sample rate.
    n_mels : int
        Mel bands (80 in the DINO and x-vector recipes).
    n_fft, win_length, hop_length : int
        FFT size (samples), window and hop (milliseconds).
    f_min, f_max : float
        Mel range in Hz (hyperion's ``fbank80_stmn_16k``: 20-7600 Hz).
    cmn_window : int
        Sliding mean-normalisation window in frames (300 = 3 s); ``0`` disables it.

    Example
    -------
    >>> fbank = LogFbankSTMN()
    >>> feats, lens = fbank(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> feats.shape, lens.tolist()
    (torch.Size([2, 101, 80]), [101, 51])
    >>> bool(feats[1, 51:].abs().sum() == 0)
    True
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 512,
        win_length: int = 25,
        hop_length: int = 10,
        f_min: float = 20.0,
        f_max: float = 7600.0,
        cmn_window: int = 300,
    ):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.hop_samples = int(round(sample_rate * hop_length / 1000))
        self.cmn_window = int(cmn_window)
        self.fbank = Fbank(
            sample_rate=sample_rate,
            n_mels=n_mels,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=min(float(f_max), sample_rate / 2),
        )

    def forward(self, wavs: torch.Tensor, rel_lens=None):
        """Features and valid frame counts.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, T)`` waveforms.
        rel_lens : torch.Tensor, optional
            ``(B,)`` lengths relative to ``T`` (SpeechBrain convention).

        Returns
        -------
        feats : torch.Tensor
            ``(B, F, n_mels)`` float32 features, zero on padded frames.
        frame_lens : torch.LongTensor
            ``(B,)`` valid frames.
        """
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (B, T), got shape {tuple(wavs.shape)}")
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            feats = self.fbank(wavs.float())
            if rel_lens is None:
                num_samples = torch.full((wavs.shape[0],), wavs.shape[1], device=wavs.device)
            else:
                num_samples = torch.round(rel_lens.float() * wavs.shape[1])
            frame_lens = frame_counts(num_samples, self.hop_samples, feats.shape[1])
            if self.cmn_window > 0:
                feats = sliding_mean_normalisation(feats, frame_lens, self.cmn_window)
            else:
                valid = torch.arange(feats.shape[1], device=feats.device) < frame_lens[:, None]
                feats = torch.where(valid.unsqueeze(-1), feats, torch.zeros_like(feats))
        return feats, frame_lens
