"""Fused Triton soft-DTW kernels (CUDA): forward DP and backward ``E`` recursion.

One program per pair (``grid = (B,)``; a divergence launches its ``3 B`` pairs at once). Each
program walks the anti-diagonals of its own ``(n_b, m_b)`` matrix in a loop inside the kernel,
in tiles of ``BLOCK`` cells, with ``tl.debug_barrier()`` between diagonals: a whole forward or
backward pass is one launch, with no per-diagonal launches from Python and no host
synchronisation (lengths stay on the device). Only the band's cells of each diagonal are
iterated (exact integer bounds, see :mod:`lasersb.alignment._band`).

The DP runs in float32 (float64 for float64 inputs) whatever the input dtype. ``R`` lives in a
``(B, N + 2, M + 2)`` scratch pre-filled with ``+inf`` (so out-of-band and padded predecessors
read ``+inf``); the backward writes ``grad_output[b] * E[b]`` into a zero-initialised
``(B, N + 1, M + 1)`` buffer, starting the recursion at ``(n_b - 1, m_b - 1)`` with the
incoming gradient (the recursion is linear, so no separate scaling pass is needed).

Tested on CPU tensors under ``TRITON_INTERPRET=1`` (tests/test_soft_dtw_triton.py).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _band_width(n, m, bandwidth):
    """Scaled half-width ``W`` (see _band.py); a width covering everything for no band."""
    n1 = tl.maximum(n - 1, 1)
    need = (m - 1 + 2 * n1 - 1) // (2 * n1)
    w_eff = tl.minimum(tl.maximum(need, bandwidth), m)
    full = (bandwidth < 0) | (n <= 1)
    return tl.where(full, (n + m) * n, w_eff * (n - 1))


@triton.jit
def _diagonal_rows(d, n, m, width):
    """First and last row of anti-diagonal ``d`` inside the pair and its band."""
    den = tl.maximum(n + m - 2, 1)
    lo_num = tl.maximum(d * (n - 1) - width, 0)
    i_lo = tl.maximum(tl.maximum(d - m + 1, 0), (lo_num + den - 1) // den)
    i_hi = tl.minimum(tl.minimum(n - 1, d), (d * (n - 1) + width) // den)
    return i_lo, i_hi


@triton.jit
def _forward_kernel(
    D, R, X_LENS, Y_LENS, GAMMA,
    stride_db, stride_dn, stride_dm, stride_rb, stride_rn,
    bandwidth,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    n = tl.load(X_LENS + b).to(tl.int32)
    m = tl.load(Y_LENS + b).to(tl.int32)
    gamma = tl.load(GAMMA)
    inv_gamma = 1.0 / gamma
    width = _band_width(n, m, bandwidth)
    d_base = D + b.to(tl.int64) * stride_db
    r_base = R + b.to(tl.int64) * stride_rb
    tl.store(r_base, gamma * 0.0)
    tl.debug_barrier()
    offs = tl.arange(0, BLOCK)
    for d in range(0, n + m - 1):
        i_lo, i_hi = _diagonal_rows(d, n, m, width)
        for start in range(i_lo, i_hi + 1, BLOCK):
            i = start + offs
            mask = i <= i_hi
            j = d - i
            r_row = r_base + i.to(tl.int64) * stride_rn
            r0 = tl.load(r_row + j, mask=mask, other=0.0)
            r1 = tl.load(r_row + j + 1, mask=mask, other=0.0)
            r2 = tl.load(r_row + stride_rn + j, mask=mask, other=0.0)
            cost = tl.load(
                d_base + i.to(tl.int64) * stride_dn + j * stride_dm, mask=mask, other=0.0
            ).to(gamma.dtype)
            rmin = tl.minimum(tl.minimum(r0, r1), r2)
            total = (
                tl.exp((rmin - r0) * inv_gamma)
                + tl.exp((rmin - r1) * inv_gamma)
                + tl.exp((rmin - r2) * inv_gamma)
            )
            value = cost + rmin - gamma * tl.log(total)
            tl.store(r_row + stride_rn + j + 1, value, mask=mask)
        tl.debug_barrier()


@triton.jit
def _successor(E_row, R_row, D_row, j, ok, r_ij, inv_gamma, stride_dm):
    """``E_s * exp((R_s - D_s - R_ij) / gamma)`` for one successor (0 where ``E_s`` is 0)."""
    e_s = tl.load(E_row + j, mask=ok, other=0.0)
    r_s = tl.load(R_row + j + 1, mask=ok, other=0.0)
    d_s = tl.load(D_row + j * stride_dm, mask=ok, other=0.0).to(r_ij.dtype)
    arg = tl.where(e_s != 0.0, (r_s - d_s - r_ij) * inv_gamma, 0.0)
    return e_s * tl.exp(arg)


@triton.jit
def _backward_kernel(
    D, R, E, X_LENS, Y_LENS, SCALE, GAMMA,
    stride_db, stride_dn, stride_dm, stride_rb, stride_rn, stride_eb, stride_en,
    bandwidth,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    n = tl.load(X_LENS + b).to(tl.int32)
    m = tl.load(Y_LENS + b).to(tl.int32)
    gamma = tl.load(GAMMA)
    inv_gamma = 1.0 / gamma
    start_value = tl.load(SCALE + b).to(gamma.dtype)
    width = _band_width(n, m, bandwidth)
    d_base = D + b.to(tl.int64) * stride_db
    r_base = R + b.to(tl.int64) * stride_rb
    e_base = E + b.to(tl.int64) * stride_eb
    offs = tl.arange(0, BLOCK)
    for k in range(0, n + m - 1):
        d = n + m - 2 - k
        i_lo, i_hi = _diagonal_rows(d, n, m, width)
        for start in range(i_lo, i_hi + 1, BLOCK):
            i = start + offs
            mask = i <= i_hi
            j = d - i
            i64 = i.to(tl.int64)
            r_ij = tl.load(r_base + (i64 + 1) * stride_rn + j + 1, mask=mask, other=0.0)
            last = (i == n - 1) & (j == m - 1)
            e = tl.where(last, start_value, 0.0)
            down = mask & (i + 1 < n)
            right = mask & (j + 1 < m)
            e_next = e_base + (i64 + 1) * stride_en
            r_next = r_base + (i64 + 2) * stride_rn
            d_next = d_base + (i64 + 1) * stride_dn
            e_here = e_base + i64 * stride_en
            r_here = r_base + (i64 + 1) * stride_rn
            d_here = d_base + i64 * stride_dn
            e += _successor(e_next, r_next, d_next, j, down, r_ij, inv_gamma, stride_dm)
            e += _successor(e_here, r_here, d_here, j + 1, right, r_ij, inv_gamma, stride_dm)
            e += _successor(
                e_next, r_next, d_next, j + 1, down & (j + 1 < m), r_ij, inv_gamma, stride_dm
            )
            tl.store(e_here + j, e, mask=mask)
        tl.debug_barrier()


def _dp_dtype(D):
    return torch.float64 if D.dtype == torch.float64 else torch.float32


def _block_size(n_max, m_max):
    return max(16, min(1024, triton.next_power_of_2(min(n_max, m_max))))


def _num_warps(block):
    return 4 if block <= 256 else 8


def _check_device(D):
    if D.device.type != "cuda":
        from triton import knobs

        if not knobs.runtime.interpret:
            raise RuntimeError(
                "lasersb.alignment: the Triton soft-DTW backend needs CUDA tensors (or "
                "TRITON_INTERPRET=1 set before triton is imported); use backend='numba' or "
                "'auto' on CPU."
            )


def forward(D, x_lens, y_lens, gamma, bandwidth):
    """Accumulated cost scratch ``R`` ``(B, N + 2, M + 2)`` (``+inf`` outside each pair's DP).

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` distances on the GPU.
    x_lens, y_lens : torch.Tensor
        ``(B,)`` lengths on the same device.
    gamma : float
        Smoothing.
    bandwidth : int
        Band half-width, negative for none.

    Returns
    -------
    torch.Tensor
        ``R``; the value of pair ``b`` is ``R[b, x_lens[b], y_lens[b]]``.
    """
    _check_device(D)
    B, n_max, m_max = D.shape
    dtype = _dp_dtype(D)
    R = torch.full((B, n_max + 2, m_max + 2), float("inf"), dtype=dtype, device=D.device)
    gamma_t = torch.full((1,), gamma, dtype=dtype, device=D.device)
    block = _block_size(n_max, m_max)
    _forward_kernel[(B,)](
        D, R, x_lens, y_lens, gamma_t,
        D.stride(0), D.stride(1), D.stride(2), R.stride(0), R.stride(1),
        int(bandwidth),
        BLOCK=block, num_warps=_num_warps(block),
    )  # fmt: skip
    return R


def backward(D, R, x_lens, y_lens, gamma, bandwidth, scale=None):
    """``scale[b] * E[b]`` ``(B, N, M)`` with ``E`` the expected alignment (zero outside).

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
        ``(B,)`` incoming gradient (default ones).

    Returns
    -------
    torch.Tensor
        In the DP dtype (a view of the ``(B, N + 1, M + 1)`` buffer).
    """
    _check_device(D)
    B, n_max, m_max = D.shape
    dtype = R.dtype
    E = torch.zeros((B, n_max + 1, m_max + 1), dtype=dtype, device=D.device)
    if scale is None:
        scale = torch.ones(B, dtype=dtype, device=D.device)
    scale = scale.to(device=D.device, dtype=dtype).contiguous()
    gamma_t = torch.full((1,), gamma, dtype=dtype, device=D.device)
    block = _block_size(n_max, m_max)
    _backward_kernel[(B,)](
        D, R, E, x_lens, y_lens, scale, gamma_t,
        D.stride(0), D.stride(1), D.stride(2), R.stride(0), R.stride(1),
        E.stride(0), E.stride(1),
        int(bandwidth),
        BLOCK=block, num_warps=_num_warps(block),
    )  # fmt: skip
    return E[:, :n_max, :m_max]
