"""Losses between two SSL frame sequences: frame-wise (aligned by offsets) or by soft-DTW.

The losses of position-invariant SE fine-tuning (:mod:`lasersb.brains.se_finetune`), also
used by :mod:`lasersb.diagnostics.positional`: :func:`frame_mse` (the paper's SSL-MSE over the
valid frames), :func:`gather_frames` (the frames of a zero-padded reference that hold the
content, by offset) and :func:`soft_dtw_frame_loss` (the soft-DTW divergence on the same cell
costs, which needs no frame correspondence).
"""

from __future__ import annotations

import math

import torch
from speechbrain.dataio.dataio import length_to_mask

__all__ = ["frame_mse", "gather_frames", "soft_dtw_frame_loss"]


def frame_mse(
    x: torch.Tensor, y: torch.Tensor, lens: torch.Tensor, feature_reduction: str = "sum"
) -> torch.Tensor:
    """Squared frame distance averaged over the first ``lens[b]`` frames, per utterance.

    Parameters
    ----------
    x, y : torch.Tensor
        ``(B, F, H)`` frame sequences (frames beyond ``lens`` are ignored).
    lens : torch.Tensor
        ``(B,)`` valid frame counts.
    feature_reduction : str
        ``"sum"``: ``||x_i - y_i||^2`` summed over the ``H`` dimensions (the SE paper's
        SSL-MSE); ``"mean"``: divided by ``H``.

    Returns
    -------
    torch.Tensor
        ``(B,)``.

    Example
    -------
    >>> x, y = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    >>> y[1, 2:] = 5.0  # beyond lens[1]: ignored
    >>> frame_mse(x, y, torch.tensor([4, 2])).tolist()
    [3.0, 3.0]
    >>> frame_mse(x, y, torch.tensor([4, 2]), feature_reduction="mean").tolist()
    [1.0, 1.0]
    """
    _check_reduction(feature_reduction)
    frames = min(x.shape[1], y.shape[1])
    x, y = x[:, :frames], y[:, :frames]
    lens = torch.as_tensor(lens, device=x.device).clamp(1, frames)
    mask = length_to_mask(lens, max_len=frames, dtype=x.dtype)
    err = (x - y).pow(2).sum(dim=-1)
    if feature_reduction == "mean":
        err = err / x.shape[-1]
    return (err * mask).sum(dim=1) / lens.to(x.dtype)


def _check_reduction(feature_reduction):
    if feature_reduction not in ("sum", "mean"):
        raise ValueError(
            f"feature_reduction must be 'sum' (the paper's ||x - x'||^2) or 'mean' (divided by "
            f"the feature dimension), got {feature_reduction!r}."
        )


def gather_frames(x: torch.Tensor, offsets: torch.Tensor, frames: int) -> torch.Tensor:
    """Frames ``offsets[b] .. offsets[b] + frames - 1`` of each sequence (clamped at the end).

    Example
    -------
    >>> x = torch.arange(6.0).view(1, 6, 1).repeat(2, 1, 1)
    >>> gather_frames(x, torch.tensor([0, 2]), 3)[..., 0].tolist()
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    """
    offsets = torch.as_tensor(offsets, device=x.device).long()
    index = (torch.arange(frames, device=x.device)[None] + offsets[:, None]).clamp(
        max=x.shape[1] - 1
    )
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


def soft_dtw_frame_loss(
    x, y, x_lens, y_lens, divergence, feature_reduction: str = "sum", length_norm: bool = False
) -> torch.Tensor:
    """Soft-DTW divergence between two SSL sequences, on the paper's frame distance by default.

    Parameters
    ----------
    x, y : torch.Tensor
        ``(B, N, H)`` and ``(B, M, H)``.
    x_lens, y_lens : torch.Tensor
        ``(B,)`` frame counts.
    divergence : lasersb.alignment.SoftDTWDivergence
        The soft-DTW divergence (its ``gamma``, distance, bandwidth).
    feature_reduction : str
        ``"sum"``: cell costs are the divergence's distance on the raw features (squared
        Euclidean: ``||x_i - y_j||^2``, as the MSE losses); ``"mean"``: features are scaled by
        ``1/sqrt(H)``, so a squared-Euclidean cell cost is a per-dimension MSE.
    length_norm : bool
        Divide each divergence by the mean of the two sequence lengths.

    Returns
    -------
    torch.Tensor
        ``(B,)``.

    Example
    -------
    >>> from lasersb.alignment import SoftDTWDivergence
    >>> x = torch.randn(2, 6, 4)
    >>> y = x.repeat_interleave(2, dim=1)  # the same content, twice slower
    >>> loss = soft_dtw_frame_loss(x, y, torch.tensor([6, 6]), torch.tensor([12, 12]),
    ...                            SoftDTWDivergence(gamma=0.01))
    >>> bool(loss.abs().max() < 0.05)
    True
    """
    _check_reduction(feature_reduction)
    scale = 1.0 if feature_reduction == "sum" else 1.0 / math.sqrt(x.shape[-1])
    x_lens = torch.as_tensor(x_lens, device=x.device).long()
    y_lens = torch.as_tensor(y_lens, device=x.device).long()
    value = divergence(x.float() * scale, y.float() * scale, x_lens, y_lens)
    if length_norm:
        value = value / (0.5 * (x_lens + y_lens).to(value.dtype))
    return value
