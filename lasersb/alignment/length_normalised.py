"""A pairwise sequence loss divided by the sum of the two sequence lengths (SCORE's scaling).

The SCORE release (``Trikaldarshi/SCORE_Finetuning``, ``content_preserving_hubert/expert.py``)
divides the soft-DTW divergence of a pair by ``N + M``, the number of frames of both views; the
LASER release does not. Wrapping the loss keeps the LASER Brain unchanged: the YAML chooses.
"""

from __future__ import annotations

import torch
from torch import nn


class LengthNormalised(nn.Module):
    """``loss(x, y, x_lens, y_lens) / (x_lens + y_lens)`` per pair.

    Arguments
    ---------
    loss : nn.Module
        A pairwise loss returning ``(B,)`` values (e.g.
        :class:`lasersb.alignment.SoftDTWDivergence`); its ``gamma`` is exposed.

    Example
    -------
    >>> from lasersb.alignment import SoftDTWDivergence
    >>> inner = SoftDTWDivergence(gamma=0.1)
    >>> x, y = torch.randn(2, 6, 4), torch.randn(2, 5, 4)
    >>> lx, ly = torch.tensor([6, 4]), torch.tensor([5, 5])
    >>> ratio = inner(x, y, lx, ly) / LengthNormalised(inner)(x, y, lx, ly)
    >>> ratio.round().tolist(), LengthNormalised(inner).gamma
    ([11.0, 9.0], 0.1)
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    @property
    def gamma(self) -> float:
        """The wrapped loss's smoothing (used for soft-alignment plots)."""
        return self.loss.gamma

    def forward(self, x, y, x_lens=None, y_lens=None):
        """``(B,)`` loss per pair divided by its total number of frames."""
        values = self.loss(x, y, x_lens, y_lens)
        n_x = torch.full_like(values, x.shape[1]) if x_lens is None else x_lens
        n_y = torch.full_like(values, y.shape[1]) if y_lens is None else y_lens
        total = torch.as_tensor(n_x, device=values.device) + torch.as_tensor(
            n_y, device=values.device
        )
        return values / total.to(values.dtype)
