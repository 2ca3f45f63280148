"""Frame-to-frame distance matrices for soft-DTW, computed with matrix products.

Every distance here is built from ``torch.bmm`` of the two sequences, so memory is
``O(B * N * M)``: no ``B x N x M x D`` intermediate is ever formed (as the naive
``(x[:, :, None] - y[:, None]) ** 2`` would). Gradients to ``x`` and ``y`` flow through
ordinary autograd.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

DISTANCES = ("sqeuclidean", "cosine")


def sqeuclidean_distance(x, y):
    """Squared Euclidean distance between every frame of ``x`` and every frame of ``y``.

    ``||x_i||^2 + ||y_j||^2 - 2 <x_i, y_j>`` as ONE batched matrix product of augmented frames
    ``[x_i, ||x_i||^2, 1] . [-2 y_j, 1, ||y_j||^2]``: no ``(B, N, M)`` element-wise pass in the
    forward or the backward, and no ``B x N x M x D`` intermediate. Rounding can leave entries
    slightly negative (about ``1e-7 ||x||^2`` in float32); soft-DTW does not mind, so no clamp is
    spent on it.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)`` first batch of sequences.
    y : torch.Tensor
        ``(B, M, D)`` second batch of sequences.

    Returns
    -------
    torch.Tensor
        ``(B, N, M)`` distances.

    Example
    -------
    >>> x = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    >>> y = torch.tensor([[[1.0, 0.0]]])
    >>> sqeuclidean_distance(x, y)
    tensor([[[1.],
             [1.]]])
    """
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True)
    x_aug = torch.cat([x, x_sq, torch.ones_like(x_sq)], dim=-1)
    y_aug = torch.cat([-2.0 * y, torch.ones_like(y_sq), y_sq], dim=-1)
    return torch.bmm(x_aug, y_aug.transpose(1, 2))


def cosine_distance(x, y, eps=1e-8):
    """Cosine distance ``1 - cos(x_i, y_j)`` between every pair of frames.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)`` first batch of sequences.
    y : torch.Tensor
        ``(B, M, D)`` second batch of sequences.
    eps : float
        Lower bound on the norms (all-zero frames get distance 1 to everything).

    Returns
    -------
    torch.Tensor
        ``(B, N, M)`` distances in ``[0, 2]``.

    Example
    -------
    >>> x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    >>> cosine_distance(x, x)
    tensor([[[0., 1.],
             [1., 0.]]])
    """
    x_n = F.normalize(x, dim=-1, eps=eps)
    y_n = F.normalize(y, dim=-1, eps=eps)
    one = torch.ones((1, 1, 1), dtype=x_n.dtype, device=x_n.device)
    return torch.baddbmm(one, x_n, y_n.transpose(1, 2), alpha=-1.0)


def pairwise_distance(x, y, distance="sqeuclidean"):
    """Distance matrix ``(B, N, M)`` between two batches of sequences.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)``.
    y : torch.Tensor
        ``(B, M, D)``.
    distance : str or callable
        ``"sqeuclidean"`` (default), ``"cosine"``, or a callable ``f(x, y) -> (B, N, M)``.

    Returns
    -------
    torch.Tensor
        ``(B, N, M)`` distance matrix.

    Example
    -------
    >>> x = torch.zeros(2, 3, 4)
    >>> pairwise_distance(x, torch.ones(2, 5, 4)).shape
    torch.Size([2, 3, 5])
    """
    if isinstance(distance, str):
        if distance == "sqeuclidean":
            return sqeuclidean_distance(x, y)
        if distance == "cosine":
            return cosine_distance(x, y)
        raise ValueError(
            f"lasersb.alignment: unknown distance {distance!r}; use one of {DISTANCES} "
            "or pass a callable f(x, y) -> (B, N, M)."
        )
    if not isinstance(distance, Callable):
        raise TypeError(
            f"lasersb.alignment: distance must be a name in {DISTANCES} or a callable, "
            f"got {type(distance).__name__}."
        )
    out = distance(x, y)
    expected = (x.shape[0], x.shape[1], y.shape[1])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"lasersb.alignment: the distance callable {distance!r} returned {got}; it must "
            f"return a tensor of shape (B, N, M) = {expected}."
        )
    return out
