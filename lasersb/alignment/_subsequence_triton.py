"""Fused Triton subsequence DTW (CUDA): the asymmetric-pattern DP in one launch.

One program per pair (``grid = (B,)``). Each program walks the rows of its own ``(n_b, m_b)``
matrix in a loop inside the kernel, the columns of a row in tiles of ``BLOCK`` cells (a row
depends only on the previous one, so a tile needs no neighbour within its row), with
``tl.debug_barrier()`` between rows. Two rows live in a ``(B, 2, M + 2)`` scratch pre-filled with
``+inf``: the two leading cells stay ``+inf`` and serve as the ``j - 1`` and ``j - 2``
predecessors of the first columns. The last row is copied into a ``(B, M)`` output (``+inf``
beyond each document); the end cell is chosen by the caller. The DP runs in float32 (float64
for float64 inputs); lengths stay on the device (no host synchronisation).

Tested on CPU tensors under ``TRITON_INTERPRET=1`` (tests/test_subsequence_dtw.py).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _last_row_kernel(
    D, G, OUT, Q_LENS, D_LENS,
    stride_db, stride_dn, stride_dm, stride_gb, stride_gr, stride_ob,
    OPEN_BEGIN: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    n = tl.load(Q_LENS + b).to(tl.int32)
    m = tl.load(D_LENS + b).to(tl.int32)
    d_base = D + b.to(tl.int64) * stride_db
    g_base = G + b.to(tl.int64) * stride_gb + 2
    o_base = OUT + b.to(tl.int64) * stride_ob
    offs = tl.arange(0, BLOCK)
    for start in range(0, m, BLOCK):
        j = start + offs
        mask = j < m
        cost = tl.load(d_base + j * stride_dm, mask=mask, other=0.0).to(G.dtype.element_ty)
        if not OPEN_BEGIN:
            cost = tl.where(j == 0, cost, float("inf"))
        tl.store(g_base + j, cost, mask=mask)
    tl.debug_barrier()
    d_row = d_base
    for i in range(1, n):
        prev = g_base + ((i - 1) % 2) * stride_gr
        cur = g_base + (i % 2) * stride_gr
        d_row += stride_dn  # pointer increments: no int32 overflow of i * stride_dn
        for start in range(0, m, BLOCK):
            j = start + offs
            mask = j < m
            g0 = tl.load(prev + j, mask=mask, other=0.0)
            g1 = tl.load(prev + j - 1, mask=mask, other=0.0)
            g2 = tl.load(prev + j - 2, mask=mask, other=0.0)
            cost = tl.load(d_row + j * stride_dm, mask=mask, other=0.0).to(g0.dtype)
            tl.store(cur + j, cost + tl.minimum(tl.minimum(g0, g1), g2), mask=mask)
        tl.debug_barrier()
    last = g_base + ((n - 1) % 2) * stride_gr
    for start in range(0, m, BLOCK):
        j = start + offs
        mask = j < m
        tl.store(o_base + j, tl.load(last + j, mask=mask, other=0.0), mask=mask)


def _check_device(D):
    if D.device.type != "cuda":
        from triton import knobs

        if not knobs.runtime.interpret:
            raise RuntimeError(
                "lasersb.alignment.subsequence_dtw: the Triton backend needs CUDA tensors (or "
                "TRITON_INTERPRET=1 set before triton is imported); use backend='numba' or "
                "'auto' on CPU."
            )


def last_row(D, query_lens, doc_lens, open_begin):
    """Last DP row ``g[N_b - 1, :]`` ``(B, M)`` of every pair, on ``D``'s device.

    Parameters
    ----------
    D : torch.Tensor
        ``(B, N, M)`` costs on the GPU.
    query_lens, doc_lens : torch.Tensor
        ``(B,)`` lengths on the same device.
    open_begin : bool
        Whether the match may start at any document frame.

    Returns
    -------
    torch.Tensor
        float32 (float64 for float64 ``D``), ``+inf`` beyond each document.
    """
    _check_device(D)
    B, _, m_max = D.shape
    dtype = torch.float64 if D.dtype == torch.float64 else torch.float32
    G = torch.full((B, 2, m_max + 2), float("inf"), dtype=dtype, device=D.device)
    out = torch.full((B, m_max), float("inf"), dtype=dtype, device=D.device)
    block = max(16, min(1024, triton.next_power_of_2(m_max)))
    _last_row_kernel[(B,)](
        D, G, out, query_lens.to(D.device), doc_lens.to(D.device),
        D.stride(0), D.stride(1), D.stride(2), G.stride(0), G.stride(1), out.stride(0),
        OPEN_BEGIN=bool(open_begin),
        BLOCK=block, num_warps=4 if block <= 256 else 8,
    )  # fmt: skip
    return out
