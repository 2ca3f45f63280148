"""Batched hard DTW with dtw-python's ``asymmetric`` step pattern, open begin and open end.

This is the matcher of query-by-example spoken term detection (s3prl ``quesst14_dtw``, which
calls ``dtw.dtw(dist, step_pattern="asymmetric", open_begin=True, open_end=True)``). For a
query-by-document local cost matrix ``D`` (rows: the ``N`` query frames, columns: the ``M``
document frames) the accumulated cost is

    ``g[0, j] = D[0, j]`` (open begin: the match may start at any document frame;
    closed begin: ``g[0, 0] = D[0, 0]``, ``g[0, j > 0] = inf``),
    ``g[i, j] = D[i, j] + min(g[i-1, j], g[i-1, j-1], g[i-1, j-2])``,

(every step consumes one query frame and 0, 1 or 2 document frames, each with weight 1), and
the normalised distance is, as dtw-python defines it for the ``"N"``-normalised asymmetric
pattern, ``min_j g[N-1, j] / N`` (open end; the first minimising ``j`` is the end frame) or
``g[N-1, M-1] / N`` (closed end). ``inf`` marks a pair with no admissible path (dtw-python
raises there).

Each row depends on the previous row only, so every backend keeps two rows:

* ``"triton"`` (CUDA): one program per pair, the row loop inside the kernel, columns in tiles
  (:mod:`lasersb.alignment._subsequence_triton`);
* ``"numba"`` (CPU): compiled, float64, ``prange`` over pairs
  (:mod:`lasersb.alignment._subsequence_numba`);
* ``"reference"``: PyTorch, vectorised over pairs and columns, a Python loop over rows.

Pairs are padded into one ``(B, N, M)`` tensor with per-pair lengths; padded cells are never
read. Equality with dtw-python (float64, 1e-6 and better) is tested in
tests/test_subsequence_dtw.py.

Example
-------
>>> D = torch.tensor([[[5.0, 0.0, 5.0, 5.0], [5.0, 5.0, 0.0, 5.0]]])
>>> out = subsequence_dtw(D, backend="reference")
>>> out.distance.item(), out.normalized_distance.item(), out.end.item()
(0.0, 0.0, 2)
"""

from typing import NamedTuple

import torch

from lasersb.alignment.soft_dtw import BACKENDS
from lasersb.alignment.soft_dtw import resolve_backend as _soft_dtw_backend


class SubsequenceDTWResult(NamedTuple):
    """Per-pair results of :func:`subsequence_dtw` (all ``(B,)``).

    Attributes
    ----------
    distance : torch.Tensor
        Accumulated cost at the end cell (dtw-python's ``distance``), float64 on CPU backends.
    normalized_distance : torch.Tensor
        ``distance / N`` (dtw-python's ``normalizedDistance``).
    end : torch.Tensor
        Document frame where the match ends (dtw-python's ``jmin``), int64.
    """

    distance: torch.Tensor
    normalized_distance: torch.Tensor
    end: torch.Tensor


def resolve_backend(backend, device):
    """Backend name that ``backend`` means on ``device``.

    Parameters
    ----------
    backend : str
        One of :data:`BACKENDS`.
    device : torch.device
        Device of the cost matrices.

    Returns
    -------
    str
        ``"triton"``, ``"numba"`` or ``"reference"``.

    Example
    -------
    >>> resolve_backend("auto", torch.device("cpu"))
    'numba'
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"lasersb.alignment.subsequence_dtw: unknown backend {backend!r}; use one of "
            f"{BACKENDS}."
        )
    return _soft_dtw_backend(backend, device)  # the same choice as soft-DTW's


def _reference_last_row(D, query_lens, doc_lens, open_begin):
    """Last DP row ``g[N_b - 1, :]`` of every pair ``(B, M)`` (PyTorch, float64 on CPU)."""
    B, n_max, m_max = D.shape
    dtype = torch.float64 if D.device.type == "cpu" or D.dtype == torch.float64 else torch.float32
    D = D.to(dtype)
    inf = torch.full((B, 2), float("inf"), dtype=dtype, device=D.device)
    g = D[:, 0, :].clone()
    if not open_begin:
        g[:, 1:] = float("inf")
    last = g.clone()
    for i in range(1, n_max):
        padded = torch.cat([inf, g], dim=1)
        best = torch.minimum(torch.minimum(padded[:, 2:], padded[:, 1:-1]), padded[:, :-2])
        g = D[:, i, :] + best
        done = (query_lens == i + 1).view(B, 1)
        last = torch.where(done, g, last)
    return last


def _last_row(D, query_lens, doc_lens, open_begin, backend):
    if backend == "numba":
        from lasersb.alignment import _subsequence_numba

        return _subsequence_numba.last_row(D, query_lens, doc_lens, open_begin)
    if backend == "triton":
        from lasersb.alignment import _subsequence_triton

        return _subsequence_triton.last_row(D, query_lens, doc_lens, open_begin)
    return _reference_last_row(D, query_lens, doc_lens, open_begin)


def _lengths(lens, default, B, device, name):
    if lens is None:
        return torch.full((B,), default, dtype=torch.int64, device=device)
    lens = torch.as_tensor(lens, device=device).long()
    if lens.shape != (B,):
        raise ValueError(
            f"lasersb.alignment.subsequence_dtw: {name} must have shape ({B},), got "
            f"{tuple(lens.shape)}"
        )
    if B and (int(lens.min()) < 1 or int(lens.max()) > default):
        raise ValueError(
            f"lasersb.alignment.subsequence_dtw: {name} must lie in [1, {default}] (the padded "
            f"size of D), got [{int(lens.min())}, {int(lens.max())}]"
        )
    return lens


def subsequence_dtw(
    D, query_lens=None, doc_lens=None, open_begin=True, open_end=True, backend="auto"
):
    """Asymmetric-pattern DTW of many (query, document) pairs at once.

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` local costs (query frames x document frames), padded; or ``(N, M)``.
    query_lens, doc_lens : torch.Tensor, optional
        ``(B,)`` lengths of each pair (default: the full padded sizes).
    open_begin, open_end : bool
        dtw-python's switches; both True is subsequence DTW (the QbE setting).
    backend : str
        ``"auto"`` (Triton on CUDA, numba on CPU), ``"triton"``, ``"numba"``, ``"reference"``.

    Returns
    -------
    SubsequenceDTWResult
        ``distance``, ``normalized_distance`` and ``end`` per pair, on ``D``'s device.

    Example
    -------
    >>> D = torch.rand(3, 5, 9, dtype=torch.float64)
    >>> out = subsequence_dtw(D, torch.tensor([5, 2, 4]), torch.tensor([9, 9, 3]))
    >>> out.normalized_distance.shape, bool((out.end < torch.tensor([9, 9, 3])).all())
    (torch.Size([3]), True)
    """
    if not isinstance(D, torch.Tensor):
        D = torch.as_tensor(D)
    if D.dim() == 2:
        D = D.unsqueeze(0)
    if D.dim() != 3:
        raise ValueError(
            "lasersb.alignment.subsequence_dtw: D must be a (B, N, M) or (N, M) cost tensor, got "
            f"shape {tuple(D.shape)}"
        )
    if not D.is_floating_point():
        D = D.double()
    B, n_max, m_max = D.shape
    query_lens = _lengths(query_lens, n_max, B, D.device, "query_lens")
    doc_lens = _lengths(doc_lens, m_max, B, D.device, "doc_lens")
    name = resolve_backend(backend, D.device)
    last = _last_row(D, query_lens, doc_lens, bool(open_begin), name).to(D.device)
    columns = torch.arange(m_max, device=D.device).view(1, m_max)
    if open_end:
        masked = last.masked_fill(columns >= doc_lens.view(B, 1), float("inf"))
        distance, end = masked.min(dim=1)
        # torch's min returns some minimising index; dtw-python's nanargmin returns the first
        end = (masked == distance.view(B, 1)).long().argmax(dim=1)
    else:
        end = doc_lens - 1
        distance = last.gather(1, end.view(B, 1)).view(B)
    return SubsequenceDTWResult(distance, distance / query_lens.to(distance.dtype), end)
