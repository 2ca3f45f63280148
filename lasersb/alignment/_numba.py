"""Compiled CPU soft-DTW (numba): forward DP and the ``E`` (gradient) recursion.

One ``prange`` iteration per pair (the batch, or the ``3 B`` pairs of a divergence), each pair
run at its own lengths. The DP runs in float64 whatever the input dtype, with a max-shifted
log-sum-exp (one ``exp`` skipped: the largest term is exactly 1), so gamma down to 1e-3 and
lengths of several thousand frames stay finite. With a Sakoe-Chiba band only the band's cells are
visited (loop bounds, see :mod:`lasersb.alignment._band`); cells outside it are never touched.

``R`` is stored as ``(B, N + 1, M + 1)`` float64 for the backward pass; the backward keeps only
two rows of ``E`` in flight and writes ``dL/dD`` straight into the output. All kernels use
``cache=True``: compiled code is reused across processes.
"""

import numpy as np
import torch
from numba import njit, prange

_INF = np.inf


@njit(cache=True, inline="always")
def _halfwidth(n, m, bandwidth):
    if bandwidth < 0 or n <= 1:
        return -1
    need = (m - 1 + 2 * (n - 1) - 1) // (2 * (n - 1))
    w_eff = max(bandwidth, need)
    if w_eff > m:
        w_eff = m
    return w_eff * (n - 1)


@njit(cache=True, inline="always")
def _row_bounds(i, n, m, width):
    if width < 0:
        return 0, m - 1
    lo_num = i * (m - 1) - width
    lo = 0
    if lo_num > 0:
        lo = (lo_num + n - 2) // (n - 1)
    hi = (i * (m - 1) + width) // (n - 1)
    if hi > m - 1:
        hi = m - 1
    return lo, hi


@njit(parallel=True, cache=True)
def _forward_kernel(D, x_lens, y_lens, gamma, bandwidth, R):
    inv_gamma = 1.0 / gamma
    for b in prange(D.shape[0]):
        n = x_lens[b]
        m = y_lens[b]
        width = _halfwidth(n, m, bandwidth)
        R[b, 0, 0] = 0.0
        for c in range(1, m + 1):
            R[b, 0, c] = _INF
        lo_next, hi_next = _row_bounds(0, n, m, width)
        for i in range(n):
            lo = lo_next
            hi = hi_next
            if i + 1 < n:
                lo_next, hi_next = _row_bounds(i + 1, n, m, width)
            r = i + 1
            R[b, r, lo] = _INF
            for c in range(hi + 2, hi_next + 2):
                R[b, r, c] = _INF
            left = _INF
            for j in range(lo, hi + 1):
                r0 = R[b, r - 1, j]
                r1 = R[b, r - 1, j + 1]
                if r0 <= r1 and r0 <= left:
                    rmin = r0
                    s = 1.0 + np.exp((r0 - r1) * inv_gamma) + np.exp((r0 - left) * inv_gamma)
                elif r1 <= left:
                    rmin = r1
                    s = 1.0 + np.exp((r1 - r0) * inv_gamma) + np.exp((r1 - left) * inv_gamma)
                else:
                    rmin = left
                    s = 1.0 + np.exp((left - r0) * inv_gamma) + np.exp((left - r1) * inv_gamma)
                left = D[b, i, j] + rmin - gamma * np.log(s)
                R[b, r, j + 1] = left


@njit(parallel=True, cache=True)
def _backward_kernel(D, R, x_lens, y_lens, gamma, bandwidth, scale, E):
    inv_gamma = 1.0 / gamma
    m_max = E.shape[2]
    for b in prange(D.shape[0]):
        n = x_lens[b]
        m = y_lens[b]
        g = scale[b]
        width = _halfwidth(n, m, bandwidth)
        e_next = np.zeros(m_max + 1)
        e_cur = np.zeros(m_max + 1)
        lo_next = 0
        hi_next = -1
        for i in range(n - 1, -1, -1):
            lo, hi = _row_bounds(i, n, m, width)
            e_cur[hi + 1] = 0.0
            for j in range(hi, lo - 1, -1):
                if i == n - 1 and j == m - 1:
                    e = 1.0
                else:
                    r_ij = R[b, i + 1, j + 1]
                    e = 0.0
                    if j + 1 <= hi:
                        e += e_cur[j + 1] * np.exp(
                            (R[b, i + 1, j + 2] - D[b, i, j + 1] - r_ij) * inv_gamma
                        )
                    if i + 1 < n:
                        if lo_next <= j <= hi_next and e_next[j] != 0.0:
                            e += e_next[j] * np.exp(
                                (R[b, i + 2, j + 1] - D[b, i + 1, j] - r_ij) * inv_gamma
                            )
                        if lo_next <= j + 1 <= hi_next and e_next[j + 1] != 0.0:
                            e += e_next[j + 1] * np.exp(
                                (R[b, i + 2, j + 2] - D[b, i + 1, j + 1] - r_ij) * inv_gamma
                            )
                e_cur[j] = e
                E[b, i, j] = g * e
            e_cur, e_next = e_next, e_cur
            lo_next = lo
            hi_next = hi


def _as_numpy(t, dtype=None):
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous().numpy()


def forward(D, x_lens, y_lens, gamma, bandwidth):
    """Accumulated cost matrix ``R`` ``(B, N + 1, M + 1)`` float64 (CPU tensor).

    Only the cells a pair's DP reads are initialised; the value of pair ``b`` is
    ``R[b, x_lens[b], y_lens[b]]``.

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` distances (float32 or float64; other dtypes are converted to float32).
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
    >>> lens = torch.tensor([2])
    >>> round(forward(D, lens, lens, 1.0, -1)[0, 2, 2].item(), 4)
    -0.5514
    """
    dtype = D.dtype if D.dtype in (torch.float32, torch.float64) else torch.float32
    B, n_max, m_max = D.shape
    D_np = _as_numpy(D, dtype)
    R = np.empty((B, n_max + 1, m_max + 1), dtype=np.float64)
    _forward_kernel(
        D_np,
        _as_numpy(x_lens, torch.int64),
        _as_numpy(y_lens, torch.int64),
        float(gamma),
        int(bandwidth),
        R,
    )
    return torch.from_numpy(R)


def backward(D, R, x_lens, y_lens, gamma, bandwidth, scale=None):
    """Expected alignment ``E = dR[n_b, m_b] / dD`` ``(B, N, M)`` (CPU tensor, ``D``'s dtype).

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
        ``E``, zero outside each pair's lengths and band.

    Example
    -------
    >>> D = torch.tensor([[[0.0, 5.0], [5.0, 0.0]]])
    >>> lens = torch.tensor([2])
    >>> backward(D, forward(D, lens, lens, 0.1, -1), lens, lens, 0.1, -1).round(decimals=3)
    tensor([[[1., 0.],
             [0., 1.]]])
    """
    dtype = D.dtype if D.dtype in (torch.float32, torch.float64) else torch.float32
    D_np = _as_numpy(D, dtype)
    E = np.zeros(D_np.shape, dtype=D_np.dtype)
    if scale is None:
        scale_np = np.ones(D_np.shape[0])
    else:
        scale_np = _as_numpy(scale, torch.float64)
    _backward_kernel(
        D_np,
        _as_numpy(R, torch.float64),
        _as_numpy(x_lens, torch.int64),
        _as_numpy(y_lens, torch.int64),
        float(gamma),
        int(bandwidth),
        scale_np,
        E,
    )
    return torch.from_numpy(E)
