"""LASER's temporal regulariser: keep neighbouring frames close and distant frames apart.

For one sequence ``z`` of ``n`` frames (already L2-normalised by the model; not normalised
here), with ``d_ij = ||z_i - z_j||_2``, ``y_ij = 1 if |i - j| > sigma else 0`` and
``w_ij = (i - j)^2 + 1``::

    R = 1 / n^2 * sum_ij [ y_ij w_ij max(0, margin - d_ij) + (1 - y_ij) d_ij / w_ij ]

Distances come from a matrix product (``||z_i||^2 + ||z_j||^2 - 2 <z_i, z_j>``) with a safe
square root: exactly zero, with zero gradient, on the diagonal and wherever the squared distance
underflows. Batched with per-utterance lengths: padded frames are excluded and ``n`` is each
utterance's own length.
"""

import torch
from torch import nn

_TINY = 1e-12


def _check_lengths(lens, batch, frames, device):
    if lens is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    lens = torch.as_tensor(lens)
    if lens.is_floating_point() or lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(
            "lasersb.alignment.temporal_regulariser: lens must be a (B,) tensor of integer frame "
            f"counts, got {lens.dtype} {tuple(lens.shape)}; convert SpeechBrain relative lengths "
            "with (rel_lens * frames).round().long()."
        )
    if lens.device.type == "cpu" and (int(lens.min()) < 1 or int(lens.max()) > frames):
        raise ValueError(
            "lasersb.alignment.temporal_regulariser: lens must be in [1, frames="
            f"{frames}], got min {int(lens.min())}, max {int(lens.max())}; drop empty utterances."
        )
    return lens.to(device=device, dtype=torch.long)


def temporal_regulariser(z, lens=None, sigma=0, margin=1.1):
    """LASER's temporal regulariser ``R`` of each utterance.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, F, D)`` frame embeddings (assumed L2-normalised).
    lens : LongTensor or list of int, optional
        Valid frames per utterance (default: all ``F``).
    sigma : int
        Frames with ``|i - j| <= sigma`` are neighbours (pulled together), others pushed beyond
        ``margin``.
    margin : float
        Margin ``m`` of the hinge on non-neighbour distances.

    Returns
    -------
    torch.Tensor
        ``(B,)`` regulariser values, each normalised by its own ``n^2``.

    Example
    -------
    >>> z = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])
    >>> temporal_regulariser(z, sigma=1)  # worked out in tests/test_temporal_regulariser.py
    tensor([0.1697])
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 3 or z.shape[1] == 0:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            "lasersb.alignment.temporal_regulariser: z must be a (B, frames, features) tensor "
            f"with at least one frame, got {shape}."
        )
    B, F, _ = z.shape
    lens = _check_lengths(lens, B, F, z.device)
    sq_norm = (z * z).sum(-1)
    sq = sq_norm.unsqueeze(2) + sq_norm.unsqueeze(1) - 2.0 * torch.bmm(z, z.transpose(1, 2))
    idx = torch.arange(F, device=z.device)
    offset = idx.view(-1, 1) - idx.view(1, -1)
    positive = (sq > _TINY) & (offset != 0)
    dist = torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)
    weight = (offset * offset + 1).to(z.dtype)
    far = offset.abs() > sigma
    terms = torch.where(far, weight * torch.relu(margin - dist), dist / weight)
    valid = (idx.view(1, -1) < lens.view(-1, 1)).to(z.dtype)
    terms = terms * valid.unsqueeze(2) * valid.unsqueeze(1)
    n = lens.to(z.dtype)
    return terms.sum(dim=(1, 2)) / (n * n)


class TemporalRegulariser(nn.Module):
    """:func:`temporal_regulariser` as an ``nn.Module`` (usable from hyperpyyaml).

    Parameters
    ----------
    sigma : int
        Neighbourhood half-width in frames.
    margin : float
        Hinge margin for non-neighbours.

    Example
    -------
    >>> reg = TemporalRegulariser(sigma=0, margin=1.1)
    >>> z = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    >>> reg(z, torch.tensor([5, 3])).shape
    torch.Size([2])
    """

    def __init__(self, sigma=0, margin=1.1):
        super().__init__()
        if sigma < 0 or margin < 0:
            raise ValueError(
                "lasersb.alignment.TemporalRegulariser: sigma and margin must be >= 0, got "
                f"sigma={sigma}, margin={margin}."
            )
        self.sigma = sigma
        self.margin = margin

    def forward(self, z, lens=None):
        """``(B,)`` regulariser values; see :func:`temporal_regulariser`."""
        return temporal_regulariser(z, lens, sigma=self.sigma, margin=self.margin)

    def extra_repr(self):
        """Hyper-parameters shown by ``print(module)``."""
        return f"sigma={self.sigma}, margin={self.margin}"
