"""Sakoe-Chiba band shared by every soft-DTW backend (integer arithmetic only).

For a pair of lengths ``(n, m)`` and a bandwidth ``w`` (frames of ``y``), cell ``(i, j)``
(0-based) is inside the band when ``|j - i (m - 1) / (n - 1)| <= w_eff``: the band follows the
diagonal from ``(0, 0)`` to ``(n - 1, m - 1)``, scaled for unequal lengths. ``w_eff =
min(max(w, ceil((m - 1) / (2 (n - 1)))), m)`` is the smallest widening that keeps the band
connected (so a path always exists). With ``W = w_eff (n - 1)``, row ``i`` covers columns

    lo(i) = ceil((i (m - 1) - W) / (n - 1)),  hi(i) = floor((i (m - 1) + W) / (n - 1))

clipped to ``[0, m - 1]``; anti-diagonal ``d = i + j`` covers rows

    ceil((d (n - 1) - W) / (n + m - 2)) <= i <= floor((d (n - 1) + W) / (n + m - 2)).

Both forms are exact (the CPU kernel iterates rows, the Triton kernel anti-diagonals, and they
visit the same cells). ``n == 1`` or no bandwidth means the full matrix.
"""

import torch

NO_BAND = -1


def band_halfwidth(n, m, bandwidth):
    """Scaled half-width ``W = w_eff (n - 1)`` of the band, or ``-1`` for the full matrix.

    Parameters
    ----------
    n, m : int
        Lengths of the pair (``n >= 1``, ``m >= 1``).
    bandwidth : int
        Band half-width in frames of ``y``; negative means no band.

    Returns
    -------
    int
        ``W`` (``>= 0``) or ``-1``.

    Example
    -------
    >>> band_halfwidth(10, 10, 2), band_halfwidth(5, 20, 1), band_halfwidth(1, 7, 3)
    (18, 12, -1)
    """
    if bandwidth < 0 or n <= 1:
        return NO_BAND
    need = (m - 1 + 2 * (n - 1) - 1) // (2 * (n - 1))
    w_eff = min(max(bandwidth, need), m)
    return w_eff * (n - 1)


def band_mask(x_lens, y_lens, n_max, m_max, bandwidth):
    """Boolean ``(B, N, M)`` mask of the cells each pair's DP visits (lengths and band).

    Parameters
    ----------
    x_lens, y_lens : torch.Tensor
        ``(B,)`` integer lengths.
    n_max, m_max : int
        Padded sizes ``N`` and ``M``.
    bandwidth : int
        Band half-width in frames, negative for no band.

    Returns
    -------
    torch.Tensor
        ``(B, N, M)`` bool, True on visited cells.

    Example
    -------
    >>> band_mask(torch.tensor([3]), torch.tensor([3]), 3, 4, 0).int()
    tensor([[[1, 1, 0, 0],
             [1, 1, 1, 0],
             [0, 1, 1, 0]]], dtype=torch.int32)
    """
    device = x_lens.device
    n = x_lens.long().view(-1, 1, 1)
    m = y_lens.long().view(-1, 1, 1)
    i = torch.arange(n_max, device=device).view(1, -1, 1)
    j = torch.arange(m_max, device=device).view(1, 1, -1)
    inside = (i < n) & (j < m)
    if bandwidth < 0:
        return inside
    n1 = (n - 1).clamp_min(1)
    need = (m - 1 + 2 * n1 - 1) // (2 * n1)
    w_eff = torch.minimum(need.clamp_min(bandwidth), m)
    big = n_max * m_max + n_max + m_max
    width = torch.where(n > 1, w_eff * (n - 1), torch.full_like(n, big))
    lo_num = i * (m - 1) - width
    lo = torch.where(lo_num <= 0, torch.zeros_like(lo_num), (lo_num + n1 - 1) // n1)
    hi = (i * (m - 1) + width) // n1
    return inside & (j >= lo) & (j <= hi)
