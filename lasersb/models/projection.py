"""Frame-level projection heads used by the self-supervised fine-tuning objectives."""

from __future__ import annotations

import torch
from torch import nn


class NormalisedProjection(nn.Module):
    """Linear projection of each frame followed by L2 normalisation (LASER's head).

    Arguments
    ---------
    input_size : int
        Feature size of the upstream's hidden states (768 for base models).
    output_size : int
        Size of the projected space (LASER: 256).
    eps : float
        Floor of the norm, so that an all-zero frame does not divide by zero.

    Example
    -------
    >>> proj = NormalisedProjection(8, 4)
    >>> z = proj(torch.randn(2, 5, 8))
    >>> z.shape
    torch.Size([2, 5, 4])
    >>> torch.allclose(z.norm(dim=-1), torch.ones(2, 5))
    True
    """

    def __init__(self, input_size: int, output_size: int = 256, eps: float = 1e-8):
        super().__init__()
        self.linear = nn.Linear(int(input_size), int(output_size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project ``(B, T, input_size)`` frames to unit-norm ``(B, T, output_size)`` frames."""
        z = self.linear(hidden)
        return z / z.norm(dim=-1, keepdim=True).clamp_min(self.eps)
