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
    hidden_size : int, optional
        ``None``: one linear layer (LASER, SCORE HuBERT). An int: ``Linear -> ReLU -> Linear``
        with this hidden width (the SCORE release's WavLM connector, 256).

    Example
    -------
    >>> proj = NormalisedProjection(8, 4)
    >>> z = proj(torch.randn(2, 5, 8))
    >>> z.shape
    torch.Size([2, 5, 4])
    >>> torch.allclose(z.norm(dim=-1), torch.ones(2, 5))
    True
    >>> NormalisedProjection(8, 4, hidden_size=4)(torch.randn(1, 3, 8)).shape
    torch.Size([1, 3, 4])
    """

    def __init__(
        self, input_size: int, output_size: int = 256, eps: float = 1e-8, hidden_size=None
    ):
        super().__init__()
        if hidden_size is None:
            self.linear = nn.Linear(int(input_size), int(output_size))
        else:
            self.linear = nn.Sequential(
                nn.Linear(int(input_size), int(hidden_size)),
                nn.ReLU(),
                nn.Linear(int(hidden_size), int(output_size)),
            )
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project ``(B, T, input_size)`` frames to unit-norm ``(B, T, output_size)`` frames."""
        z = self.linear(hidden)
        return z / z.norm(dim=-1, keepdim=True).clamp_min(self.eps)
