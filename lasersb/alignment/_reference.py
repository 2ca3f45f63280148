"""Plain PyTorch soft-DTW (reference backend, kept for tests and as a fallback on any device).

Two implementations of the same recursion, both honouring per-pair lengths and the band:

* :func:`forward` / :func:`backward`: the value DP and the Cuturi & Blondel (2017) ``E``
  recursion, vectorised over the batch and over each anti-diagonal (``N + M - 1`` Python
  steps). This is the ``backend="reference"`` of :func:`lasersb.alignment.soft_dtw`.
* :func:`soft_dtw_autograd`: a literal cell-by-cell DP through ordinary autograd (no hand-written
  backward). Very slow; used only by tests on tiny sizes to check the ``E`` recursion itself.

The DP: ``R[0, 0] = 0``, ``R[i, j] = D[i-1, j-1] + softmin_gamma(R[i-1, j-1], R[i-1, j],
R[i, j-1])`` with ``softmin_gamma(a) = -gamma log sum exp(-a / gamma)``; the value of pair ``b``
is ``R[n_b, m_b]``.
"""

import torch

from lasersb.alignment._band import band_mask


def _dp_dtype(D):
    """float64 on CPU, float32 (at least) elsewhere."""
    if D.device.type == "cpu" or D.dtype == torch.float64:
        return torch.float64
    return torch.float32


def _diagonal(d, n_max, m_max, device):
    """Row and column indices of anti-diagonal ``d`` of an ``n_max x m_max`` matrix."""
    i = torch.arange(max(0, d - m_max + 1), min(n_max - 1, d) + 1, device=device)
    return i, d - i


def forward(D, x_lens, y_lens, gamma, bandwidth):
    """Accumulated cost matrix ``R`` ``(B, N + 2, M + 2)`` (row/col 0 is the ``R[0, .]`` border).

    Cells outside a pair's lengths or band hold ``+inf``.

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` distances.
    x_lens, y_lens : torch.Tensor
        ``(B,)`` lengths.
    gamma : float
        Smoothing.
    bandwidth : int
        Band half-width, negative for none.

    Returns
    -------
    torch.Tensor
        ``R``.

    Example
    -------
    >>> D = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> R = forward(D, torch.tensor([2]), torch.tensor([2]), 1.0, -1)
    >>> round(R[0, 2, 2].item(), 4)
    -0.5514
    """
    B, n_max, m_max = D.shape
    dtype = _dp_dtype(D)
    Dd = D.detach().to(dtype)
    valid = band_mask(x_lens, y_lens, n_max, m_max, bandwidth)
    R = torch.full((B, n_max + 2, m_max + 2), float("inf"), dtype=dtype, device=D.device)
    R[:, 0, 0] = 0.0
    for d in range(n_max + m_max - 1):
        i, j = _diagonal(d, n_max, m_max, D.device)
        prev = torch.stack((R[:, i, j], R[:, i, j + 1], R[:, i + 1, j]))
        soft = -gamma * torch.logsumexp(-prev / gamma, dim=0)
        R[:, i + 1, j + 1] = torch.where(valid[:, i, j], Dd[:, i, j] + soft, float("inf"))
    return R


def backward(D, R, x_lens, y_lens, gamma, bandwidth, scale=None):
    """Expected alignment ``E = dR[n_b, m_b] / dD`` ``(B, N, M)``, zero outside lengths/band.

    With ``scale`` (``(B,)``, the incoming gradient) the result is ``scale[b] * E[b]``.

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` distances.
    R : torch.Tensor
        Output of :func:`forward`.
    x_lens, y_lens : torch.Tensor
        ``(B,)`` lengths.
    gamma : float
        Smoothing.
    bandwidth : int
        Band half-width, negative for none.
    scale : torch.Tensor, optional
        ``(B,)`` factors applied to each pair's ``E``.

    Returns
    -------
    torch.Tensor
        ``E`` in ``R``'s dtype.

    Example
    -------
    >>> D = torch.tensor([[[0.0, 5.0], [5.0, 0.0]]])
    >>> lens = torch.tensor([2])
    >>> E = backward(D, forward(D, lens, lens, 0.1, -1), lens, lens, 0.1, -1)
    >>> E.round(decimals=3)
    tensor([[[1., 0.],
             [0., 1.]]], dtype=torch.float64)
    """
    B, n_max, m_max = D.shape
    dtype = R.dtype
    Dp = torch.zeros((B, n_max + 1, m_max + 1), dtype=dtype, device=D.device)
    Dp[:, :n_max, :m_max] = D.detach().to(dtype)
    valid = torch.zeros((B, n_max + 1, m_max + 1), dtype=torch.bool, device=D.device)
    valid[:, :n_max, :m_max] = band_mask(x_lens, y_lens, n_max, m_max, bandwidth)
    last = torch.zeros_like(valid)
    b_idx = torch.arange(B, device=D.device)
    last[b_idx, x_lens.long() - 1, y_lens.long() - 1] = True
    E = torch.zeros((B, n_max + 1, m_max + 1), dtype=dtype, device=D.device)
    for d in range(n_max + m_max - 2, -1, -1):
        i, j = _diagonal(d, n_max, m_max, D.device)
        r_ij = R[:, i + 1, j + 1]
        total = last[:, i, j].to(dtype)
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            si, sj = i + di, j + dj
            weight = torch.exp((R[:, si + 1, sj + 1] - Dp[:, si, sj] - r_ij) / gamma)
            total = total + torch.where(valid[:, si, sj], E[:, si, sj] * weight, 0.0)
        E[:, i, j] = torch.where(valid[:, i, j], total, 0.0)
    E = E[:, :n_max, :m_max]
    if scale is not None:
        E = E * scale.to(dtype).view(-1, 1, 1)
    return E


def soft_dtw_autograd(D, x_lens, y_lens, gamma, bandwidth=-1):
    """Soft-DTW values by a literal cell-by-cell DP through autograd (tests only, tiny sizes).

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` distances.
    x_lens, y_lens : sequence of int
        Lengths.
    gamma : float
        Smoothing.
    bandwidth : int
        Band half-width, negative for none.

    Returns
    -------
    torch.Tensor
        ``(B,)`` values, differentiable w.r.t. ``D`` by plain autograd.

    Example
    -------
    >>> D = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> round(soft_dtw_autograd(D, [2], [2], 1.0).item(), 4)
    -0.5514
    """
    B, n_max, m_max = D.shape
    x_lens = torch.as_tensor(x_lens)
    y_lens = torch.as_tensor(y_lens)
    valid = band_mask(x_lens, y_lens, n_max, m_max, bandwidth)
    inf = torch.tensor(float("inf"), dtype=D.dtype)
    values = []
    for b in range(B):
        n, m = int(x_lens[b]), int(y_lens[b])
        R = [[inf] * (m + 1) for _ in range(n + 1)]
        R[0][0] = torch.zeros((), dtype=D.dtype)
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                if not valid[b, i - 1, j - 1]:
                    continue
                prev = torch.stack((R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]))
                R[i][j] = D[b, i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, dim=0)
        values.append(R[n][m])
    return torch.stack(values)
