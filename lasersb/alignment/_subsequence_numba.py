"""Compiled CPU subsequence DTW (numba): the asymmetric-pattern DP, one ``prange`` per pair.

Each pair runs at its own lengths with two float64 rows; only the last row of the DP is
returned (the end cell is chosen in :func:`lasersb.alignment.subsequence_dtw.subsequence_dtw`).
``cache=True``: compiled code is reused across processes.
"""

import numpy as np
import torch
from numba import njit, prange


@njit(parallel=True, cache=True)
def _last_row_kernel(D, query_lens, doc_lens, open_begin, out):
    for b in prange(D.shape[0]):
        n = query_lens[b]
        m = doc_lens[b]
        prev = np.empty(m)
        cur = np.empty(m)
        for j in range(m):
            prev[j] = D[b, 0, j]
        if not open_begin:
            for j in range(1, m):
                prev[j] = np.inf
        for i in range(1, n):
            for j in range(m):
                best = prev[j]
                if j >= 1 and prev[j - 1] < best:
                    best = prev[j - 1]
                if j >= 2 and prev[j - 2] < best:
                    best = prev[j - 2]
                cur[j] = D[b, i, j] + best
            prev, cur = cur, prev
        for j in range(m):
            out[b, j] = prev[j]


def last_row(D, query_lens, doc_lens, open_begin):
    """Last DP row ``g[N_b - 1, :]`` ``(B, M)`` float64 (``inf`` beyond each document).

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` costs (any float dtype; the DP runs in float64).
    query_lens, doc_lens : torch.Tensor
        ``(B,)`` lengths.
    open_begin : bool
        Whether the match may start at any document frame.

    Returns
    -------
    torch.Tensor
        CPU float64.

    Example
    -------
    >>> D = torch.tensor([[[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]]])
    >>> last_row(D, torch.tensor([2]), torch.tensor([3]), True)
    tensor([[4., 1., 0.]], dtype=torch.float64)
    """
    D_np = D.detach().cpu().double().contiguous().numpy()
    B, _, m_max = D_np.shape
    out = np.full((B, m_max), np.inf)
    _last_row_kernel(
        D_np,
        query_lens.detach().cpu().long().numpy(),
        doc_lens.detach().cpu().long().numpy(),
        bool(open_begin),
        out,
    )
    return torch.from_numpy(out)
