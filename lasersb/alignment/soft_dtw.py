"""Soft-DTW (Cuturi & Blondel, 2017): values, divergence, expected alignment, nn.Modules.

The distance matrix ``D`` is computed with torch ops (matrix products, see
:mod:`lasersb.alignment.distances`) so gradients reach ``x`` and ``y`` through autograd; the DP
itself is a custom autograd Function on ``D`` with per-pair lengths, run by one of three
backends chosen from the device:

* ``"triton"`` (CUDA): fused forward and backward kernels, one program per pair, the
  anti-diagonal loop inside the kernel (no per-diagonal launches, no host synchronisation);
* ``"numba"`` (CPU): compiled, float64, parallel over pairs;
* ``"reference"``: plain PyTorch (tests, and any other device).

Padded frames never enter a pair's recursion (its value is ``R[n_b, m_b]``) and get zero
gradient; a padded batch gives the values and gradients of a loop over the unpadded pairs. The
divergence runs its three DPs (``xy``, ``xx``, ``yy``) as one call on a ``3 B`` batch.
"""

import torch
from torch import nn

from lasersb.alignment import _reference
from lasersb.alignment._band import NO_BAND
from lasersb.alignment.distances import DISTANCES, pairwise_distance

BACKENDS = ("auto", "triton", "numba", "reference")


def _backend_module(name):
    if name == "numba":
        from lasersb.alignment import _numba

        return _numba
    if name == "triton":
        from lasersb.alignment import _triton

        return _triton
    return _reference


def resolve_backend(backend, device):
    """Backend name that ``backend`` means on ``device``.

    Parameters
    ----------
    backend : str
        One of ``"auto"``, ``"triton"``, ``"numba"``, ``"reference"``.
    device : torch.device
        Device of the inputs.

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
            f"lasersb.alignment: unknown soft-DTW backend {backend!r}; use one of {BACKENDS}."
        )
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "reference"
        return "triton"
    if device.type == "cpu":
        try:
            import numba  # noqa: F401
        except ImportError:
            return "reference"
        return "numba"
    return "reference"


def _gather_values(R, x_lens, y_lens):
    """``R[b, n_b, m_b]`` for every pair (no host synchronisation)."""
    B, rows, cols = R.shape
    flat = x_lens.to(R.device).long() * cols + y_lens.to(R.device).long()
    return R.reshape(B, rows * cols).gather(1, flat.view(B, 1)).view(B)


def _run_forward(D, x_lens, y_lens, gamma, bandwidth, backend):
    R = _backend_module(backend).forward(D, x_lens, y_lens, gamma, bandwidth)
    return R, _gather_values(R, x_lens, y_lens).to(device=D.device)


def _run_backward(D, R, x_lens, y_lens, gamma, bandwidth, backend, scale=None):
    E = _backend_module(backend).backward(D, R, x_lens, y_lens, gamma, bandwidth, scale)
    return E.to(device=D.device)


class SoftDTWFunction(torch.autograd.Function):
    """Soft-DTW on a distance matrix ``D`` ``(B, N, M)`` with per-pair lengths.

    ``apply(D, x_lens, y_lens, gamma, bandwidth, backend) -> (B,)``; the backward returns
    ``grad_output[b] * E[b]`` with ``E`` the expected alignment. ``bandwidth`` is an int
    (negative for no band), ``backend`` a resolved backend name.

    Example
    -------
    >>> D = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    >>> lens = torch.tensor([4, 2]), torch.tensor([3, 3])
    >>> values = SoftDTWFunction.apply(D, *lens, 1.0, -1, "numba")
    >>> values.sum().backward()
    >>> bool(D.grad[1, 2:].abs().sum() == 0)
    True
    """

    @staticmethod
    def forward(ctx, D, x_lens, y_lens, gamma, bandwidth, backend):
        R, values = _run_forward(D.detach(), x_lens, y_lens, gamma, bandwidth, backend)
        ctx.save_for_backward(D, R, x_lens, y_lens)
        ctx.gamma = gamma
        ctx.bandwidth = bandwidth
        ctx.backend = backend
        return values.to(D.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        D, R, x_lens, y_lens = ctx.saved_tensors
        grad_D = _run_backward(
            D.detach(), R, x_lens, y_lens, ctx.gamma, ctx.bandwidth, ctx.backend, grad_output
        )
        return grad_D.to(D.dtype), None, None, None, None, None


def _check_sequences(x, y):
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"lasersb.alignment.soft_dtw: {name} must be a (B, frames, features) tensor, "
                f"got {shape}; add a batch dimension with {name}.unsqueeze(0) for one sequence."
            )
        if not t.is_floating_point():
            raise TypeError(
                f"lasersb.alignment.soft_dtw: {name} must be floating point, got {t.dtype}."
            )
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            "lasersb.alignment.soft_dtw: x (B, N, D) and y (B, M, D) must share B and D, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )
    if x.shape[0] == 0:
        raise ValueError("lasersb.alignment.soft_dtw: empty batch (B == 0).")
    for name, t in (("x", x), ("y", y)):
        if t.shape[1] == 0:
            raise ValueError(
                f"lasersb.alignment.soft_dtw: {name} has zero frames ({tuple(t.shape)}); soft-DTW "
                "needs at least one frame per sequence: drop empty utterances before the loss."
            )


def _check_lengths(lens, batch, frames, device, name):
    """Integer lengths ``(B,)`` (LongTensor on ``device``), validated."""
    if lens is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    lens = torch.as_tensor(lens)
    if lens.is_floating_point() or lens.is_complex() or lens.dtype == torch.bool:
        raise TypeError(
            f"lasersb.alignment.soft_dtw: {name} must hold integer frame counts, got "
            f"{lens.dtype}; convert SpeechBrain relative lengths with "
            f"({name} * frames).round().long()."
        )
    if lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(
            f"lasersb.alignment.soft_dtw: {name} must have shape ({batch},), got "
            f"{tuple(lens.shape)}."
        )
    if lens.device.type == "cpu":
        low, high = int(lens.min()), int(lens.max())
        if low < 1:
            raise ValueError(
                f"lasersb.alignment.soft_dtw: {name} contains a zero-length (all-padded) "
                f"sequence (min length {low}); every pair needs at least one frame: drop empty "
                "utterances from the batch."
            )
        if high > frames:
            raise ValueError(
                f"lasersb.alignment.soft_dtw: {name} has a length {high} larger than the padded "
                f"size {frames}."
            )
    else:
        # Device-side check: no host synchronisation.
        torch._assert_async(
            ((lens >= 1) & (lens <= frames)).all(),
            f"lasersb.alignment.soft_dtw: {name} must be in [1, {frames}]",
        )
    return lens.to(device=device, dtype=torch.long)


def _check_options(gamma, bandwidth):
    if not gamma > 0:
        raise ValueError(f"lasersb.alignment.soft_dtw: gamma must be > 0, got {gamma}.")
    if bandwidth is None:
        return NO_BAND
    if isinstance(bandwidth, bool) or int(bandwidth) != bandwidth or bandwidth < 0:
        raise ValueError(
            "lasersb.alignment.soft_dtw: bandwidth must be None or a non-negative integer "
            f"number of frames, got {bandwidth!r}."
        )
    return int(bandwidth)


def _prepare(x, y, x_lens, y_lens, gamma, bandwidth, backend):
    _check_sequences(x, y)
    band = _check_options(gamma, bandwidth)
    x_lens = _check_lengths(x_lens, x.shape[0], x.shape[1], x.device, "x_lens")
    y_lens = _check_lengths(y_lens, y.shape[0], y.shape[1], y.device, "y_lens")
    return x_lens, y_lens, band, resolve_backend(backend, x.device)


def soft_dtw(
    x, y, x_lens=None, y_lens=None, gamma=1.0, distance="sqeuclidean", bandwidth=None,
    backend="auto",
):  # fmt: skip
    """Soft-DTW value of each pair ``(x[b, :x_lens[b]], y[b, :y_lens[b]])``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, D)`` padded sequences.
    y : torch.Tensor
        ``(B, M, D)`` padded sequences.
    x_lens, y_lens : LongTensor or list of int, optional
        Frame counts (default: all frames).
    gamma : float
        Smoothing (> 0); smaller is closer to DTW.
    distance : str or callable
        ``"sqeuclidean"``, ``"cosine"`` or ``f(x, y) -> (B, N, M)``.
    bandwidth : int, optional
        Sakoe-Chiba half-width in frames of ``y``, around the diagonal scaled to each pair's
        lengths (widened to keep a path); cells outside are never visited.
    backend : str
        ``"auto"`` (Triton on CUDA, numba on CPU), ``"triton"``, ``"numba"``, ``"reference"``.

    Returns
    -------
    torch.Tensor
        ``(B,)`` values, differentiable w.r.t. ``x`` and ``y``.

    Example
    -------
    >>> x = torch.tensor([[[0.0], [1.0], [2.0]]])
    >>> y = torch.tensor([[[0.0], [2.0], [9.0]]])
    >>> value = soft_dtw(x, y, [3], [2], gamma=0.01)  # y's padded 3rd frame is ignored
    >>> round(value.item(), 4)  # DTW cost 1 on two optimal paths: 1 - 0.01 log 2
    0.9931
    """
    x_lens, y_lens, band, backend = _prepare(x, y, x_lens, y_lens, gamma, bandwidth, backend)
    D = pairwise_distance(x, y, distance)
    return SoftDTWFunction.apply(D, x_lens, y_lens, float(gamma), band, backend)


def _pad_frames(x, frames):
    if x.shape[1] == frames:
        return x
    return nn.functional.pad(x, (0, 0, 0, frames - x.shape[1]))


def soft_dtw_divergence(
    x, y, x_lens=None, y_lens=None, gamma=1.0, distance="sqeuclidean", bandwidth=None,
    backend="auto",
):  # fmt: skip
    """Soft-DTW divergence ``sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2`` per pair.

    Each term runs at its own lengths; the three distance matrices come from one batched
    matrix product and the three DPs run as one call on ``3 B`` pairs (sequences zero-padded to
    ``max(N, M)`` frames; padding never enters a recursion). Arguments as in :func:`soft_dtw`.

    Returns
    -------
    torch.Tensor
        ``(B,)`` divergences (zero when ``x == y``).

    Example
    -------
    >>> x = torch.randn(2, 5, 3)
    >>> soft_dtw_divergence(x, x, [5, 3], [5, 3]).abs().max() < 1e-5
    tensor(True)
    """
    x_lens, y_lens, band, backend = _prepare(x, y, x_lens, y_lens, gamma, bandwidth, backend)
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    size = max(N, M)
    x_pad, y_pad = _pad_frames(x, size), _pad_frames(y, size)
    D = pairwise_distance(
        torch.cat([x_pad, x_pad, y_pad]), torch.cat([y_pad, x_pad, y_pad]), distance
    )
    rows = torch.cat([x_lens, x_lens, y_lens])
    cols = torch.cat([y_lens, x_lens, y_lens])
    values = SoftDTWFunction.apply(D, rows, cols, float(gamma), band, backend)
    return values[:B] - 0.5 * (values[B : 2 * B] + values[2 * B :])


def soft_alignment(
    x, y, x_lens=None, y_lens=None, gamma=1.0, distance="sqeuclidean", bandwidth=None,
    backend="auto",
):  # fmt: skip
    """Expected alignment ``dsdtw(x, y) / dD`` ``(B, N, M)`` (for plots and analysis).

    Entry ``(i, j)`` is the probability, under the Gibbs distribution over alignment paths,
    that frame ``i`` of ``x`` is matched with frame ``j`` of ``y``; zero outside each pair's
    lengths (and band). Arguments as in :func:`soft_dtw`; no gradient flows through it.

    Returns
    -------
    torch.Tensor
        ``(B, N, M)`` in ``x``'s dtype.

    Example
    -------
    >>> x = torch.tensor([[[0.0], [1.0], [2.0]]])
    >>> soft_alignment(x, x, gamma=0.01).round(decimals=3)
    tensor([[[1., 0., 0.],
             [0., 1., 0.],
             [0., 0., 1.]]])
    """
    x_lens, y_lens, band, backend = _prepare(x, y, x_lens, y_lens, gamma, bandwidth, backend)
    with torch.no_grad():
        D = pairwise_distance(x, y, distance)
        R, _ = _run_forward(D, x_lens, y_lens, float(gamma), band, backend)
        E = _run_backward(D, R, x_lens, y_lens, float(gamma), band, backend)
    return E.to(x.dtype)


class _SoftDTWBase(nn.Module):
    def __init__(self, gamma=1.0, distance="sqeuclidean", bandwidth=None, backend="auto"):
        super().__init__()
        _check_options(gamma, bandwidth)
        if isinstance(distance, str) and distance not in DISTANCES:
            raise ValueError(
                f"lasersb.alignment: unknown distance {distance!r}; use one of {DISTANCES} "
                "or pass a callable."
            )
        if backend not in BACKENDS:
            raise ValueError(f"lasersb.alignment: unknown backend {backend!r}; use {BACKENDS}.")
        self.gamma = float(gamma)
        self.distance = distance
        self.bandwidth = bandwidth
        self.backend = backend

    def _options(self):
        return dict(
            gamma=self.gamma, distance=self.distance, bandwidth=self.bandwidth,
            backend=self.backend,
        )  # fmt: skip

    def extra_repr(self):
        """Hyper-parameters shown by ``print(module)``."""
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class SoftDTW(_SoftDTWBase):
    """Soft-DTW as an ``nn.Module`` (usable from hyperpyyaml with ``!new:``).

    Parameters
    ----------
    gamma, distance, bandwidth, backend
        See :func:`soft_dtw`.

    Example
    -------
    >>> loss = SoftDTW(gamma=0.1)
    >>> loss(torch.randn(2, 6, 4), torch.randn(2, 5, 4), [6, 4], [5, 5]).shape
    torch.Size([2])
    """

    def forward(self, x, y, x_lens=None, y_lens=None):
        """``(B,)`` soft-DTW values; see :func:`soft_dtw`."""
        return soft_dtw(x, y, x_lens, y_lens, **self._options())


class SoftDTWDivergence(_SoftDTWBase):
    """Soft-DTW divergence as an ``nn.Module`` (LASER's loss).

    Parameters
    ----------
    gamma, distance, bandwidth, backend
        See :func:`soft_dtw`.

    Example
    -------
    >>> loss = SoftDTWDivergence(gamma=0.1)
    >>> z = torch.nn.functional.normalize(torch.randn(2, 6, 4), dim=-1)
    >>> loss(z, z.flip(1), torch.tensor([6, 4]), torch.tensor([6, 4])).shape
    torch.Size([2])
    """

    def forward(self, x, y, x_lens=None, y_lens=None):
        """``(B,)`` divergences; see :func:`soft_dtw_divergence`."""
        return soft_dtw_divergence(x, y, x_lens, y_lens, **self._options())
