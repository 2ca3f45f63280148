"""Tests of lasersb.alignment soft-DTW: CPU (numba) and reference backends.

Checked against tslearn (values, gradients), against a literal autograd DP (the E recursion),
with torch.autograd.gradcheck in float64, for padded batches (== loop over unpadded pairs, zero
gradient on padding), Sakoe-Chiba bands, small gamma / long sequences, and user errors. The
Triton kernel is tested under the interpreter in tests/test_soft_dtw_triton.py.
"""

import numpy as np
import pytest
import torch
from tslearn.metrics import SoftDTW as TslearnSoftDTW
from tslearn.metrics import SoftDTWLossPyTorch
from tslearn.metrics import SquaredEuclidean as TslearnSquaredEuclidean

from lasersb.alignment import (
    SoftDTW,
    SoftDTWDivergence,
    _reference,
    soft_alignment,
    soft_dtw,
    soft_dtw_divergence,
)
from lasersb.alignment._band import band_mask
from lasersb.alignment.distances import cosine_distance, pairwise_distance, sqeuclidean_distance

BACKENDS = ["numba", "reference"]
RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _cache_tslearn_jit():
    """Let numba cache tslearn's (uncached) jitted kernels: their compile takes ~10-30 s."""
    import numba
    import tslearn.metrics._masks as masks_module
    import tslearn.metrics._soft_dtw as sdtw_module
    import tslearn.metrics.soft_dtw_fast as fast_module
    import tslearn.metrics.soft_dtw_loss_pytorch as loss_module

    for module in (sdtw_module, loss_module, fast_module, masks_module):
        for name in dir(module):
            fn = getattr(module, name)
            if (
                isinstance(fn, numba.core.registry.CPUDispatcher)
                and fn._cache.__class__.__name__ == "NullCache"
            ):
                try:
                    fn.enable_caching()
                except Exception:  # noqa: BLE001 (read-only site-packages: just compile)
                    pass


def _rel_close(a, b, rtol=RTOL):
    """Relative closeness w.r.t. the largest magnitude of b (robust to near-zero entries)."""
    a = torch.as_tensor(a).detach().to(torch.float64)
    b = torch.as_tensor(b).detach().to(torch.float64)
    scale = b.abs().max().clamp_min(1e-12)
    return float((a - b).abs().max() / scale) <= rtol


def _pairs(seed, batch=3, n_max=9, m_max=7, dim=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_max, dim, generator=gen, dtype=dtype)
    y = torch.randn(batch, m_max, dim, generator=gen, dtype=dtype)
    x_lens = torch.tensor([n_max, max(1, n_max // 2), 1][:batch])
    y_lens = torch.tensor([max(1, m_max - 2), m_max, min(3, m_max)][:batch])
    return x, y, x_lens, y_lens


# --------------------------------------------------------------------------- tslearn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [1.0, 0.1, 0.01])
def test_values_and_alignment_match_tslearn(backend, gamma):
    x, y, x_lens, y_lens = _pairs(0)
    values = soft_dtw(x, y, x_lens, y_lens, gamma=gamma, backend=backend)
    align = soft_alignment(x, y, x_lens, y_lens, gamma=gamma, backend=backend)
    for b in range(x.shape[0]):
        n, m = int(x_lens[b]), int(y_lens[b])
        xb, yb = x[b, :n].numpy(), y[b, :m].numpy()
        dist = ((xb[:, None, :] - yb[None, :, :]) ** 2).sum(-1)
        sdtw = TslearnSoftDTW(dist, gamma=gamma)  # what tslearn.metrics.soft_dtw runs
        assert _rel_close(values[b], torch.tensor(sdtw.compute()))
        assert _rel_close(align[b, :n, :m], torch.from_numpy(sdtw.grad()))
        assert align[b, n:].abs().sum() == 0 and align[b, :, m:].abs().sum() == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [1.0, 0.1])
def test_gradients_match_tslearn(backend, gamma):
    # tslearn's float64 gradient path: SoftDTW(D).grad() chained through
    # SquaredEuclidean.jacobian_product (tslearn's SoftDTWLossPyTorch runs the same recursion but
    # casts R to float32, which limits its gradients to ~1e-5 relative at gamma 0.1).
    x, y, x_lens, y_lens = _pairs(1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    soft_dtw(x, y, x_lens, y_lens, gamma=gamma, backend=backend).sum().backward()
    for b in range(x.shape[0]):
        n, m = int(x_lens[b]), int(y_lens[b])
        xb, yb = x[b, :n].detach().numpy(), y[b, :m].detach().numpy()
        metric = TslearnSquaredEuclidean(xb, yb)
        sdtw = TslearnSoftDTW(metric.compute(), gamma=gamma)
        sdtw.compute()
        E = sdtw.grad()
        assert _rel_close(x.grad[b, :n], torch.from_numpy(metric.jacobian_product(E)))
        grad_y = TslearnSquaredEuclidean(yb, xb).jacobian_product(E.T)
        assert _rel_close(y.grad[b, :m], torch.from_numpy(grad_y))
        assert x.grad[b, n:].abs().sum() == 0 and y.grad[b, m:].abs().sum() == 0


def test_divergence_matches_tslearn_normalized_loss():
    gamma = 1.0
    x, y, x_lens, y_lens = _pairs(2)
    values = soft_dtw_divergence(x, y, x_lens, y_lens, gamma=gamma)
    loss = SoftDTWLossPyTorch(gamma=gamma, normalize=True)
    for b in range(x.shape[0]):
        n, m = int(x_lens[b]), int(y_lens[b])
        expected = loss(x[b : b + 1, :n], y[b : b + 1, :m])
        assert _rel_close(values[b], expected[0])


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", [False, True])
@pytest.mark.parametrize("bandwidth", [None, 1])
def test_padded_batch_equals_loop(backend, divergence, bandwidth):
    fn = soft_dtw_divergence if divergence else soft_dtw
    x, y, x_lens, y_lens = _pairs(3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    opts = dict(gamma=0.1, bandwidth=bandwidth, backend=backend)
    values = fn(x, y, x_lens, y_lens, **opts)
    values.sum().backward()
    for b in range(x.shape[0]):
        n, m = int(x_lens[b]), int(y_lens[b])
        xb = x[b : b + 1, :n].detach().clone().requires_grad_(True)
        yb = y[b : b + 1, :m].detach().clone().requires_grad_(True)
        single = fn(xb, yb, **opts)
        single.sum().backward()
        assert _rel_close(values[b], single[0])
        assert _rel_close(x.grad[b, :n], xb.grad[0])
        assert _rel_close(y.grad[b, :m], yb.grad[0])
        assert x.grad[b, n:].abs().sum() == 0
        assert y.grad[b, m:].abs().sum() == 0


def test_divergence_is_three_terms_at_own_lengths():
    x, y, x_lens, y_lens = _pairs(4)
    div = soft_dtw_divergence(x, y, x_lens, y_lens, gamma=0.3)
    xy = soft_dtw(x, y, x_lens, y_lens, gamma=0.3)
    xx = soft_dtw(x, x, x_lens, x_lens, gamma=0.3)
    yy = soft_dtw(y, y, y_lens, y_lens, gamma=0.3)
    assert _rel_close(div, xy - 0.5 * (xx + yy))
    assert soft_dtw_divergence(x, x, x_lens, x_lens).abs().max() < 1e-9


# --------------------------------------------------------------------------- recursions


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bandwidth", [-1, 0, 2])
def test_backends_match_literal_autograd_dp(backend, bandwidth):
    x, y, x_lens, y_lens = _pairs(5, n_max=6, m_max=5)
    D = sqeuclidean_distance(x, y).detach().requires_grad_(True)
    expected = _reference.soft_dtw_autograd(D, x_lens, y_lens, 0.2, bandwidth)
    expected.sum().backward()
    band = None if bandwidth < 0 else bandwidth
    values = soft_dtw(x, y, x_lens, y_lens, gamma=0.2, bandwidth=band, backend=backend)
    align = soft_alignment(x, y, x_lens, y_lens, gamma=0.2, bandwidth=band, backend=backend)
    assert _rel_close(values, expected.detach(), 1e-10)
    assert _rel_close(align, D.grad, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    x, y, x_lens, y_lens = _pairs(6, n_max=4, m_max=3, dim=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    for fn, opts in (
        (soft_dtw, dict(gamma=0.5)),
        (soft_dtw, dict(gamma=0.5, bandwidth=0, distance="cosine")),
        (soft_dtw_divergence, dict(gamma=0.5)),
        (soft_dtw_divergence, dict(gamma=0.3, bandwidth=1)),
    ):
        assert torch.autograd.gradcheck(
            lambda a, b, fn=fn, opts=opts: fn(a, b, x_lens, y_lens, backend=backend, **opts),
            (x, y),
        )


def test_float32_matches_float64():
    x, y, x_lens, y_lens = _pairs(7, batch=3, n_max=30, m_max=25, dim=16)
    v64 = soft_dtw_divergence(x, y, x_lens, y_lens, gamma=0.1)
    v32 = soft_dtw_divergence(x.float(), y.float(), x_lens, y_lens, gamma=0.1)
    assert v32.dtype == torch.float32
    assert _rel_close(v32, v64, 1e-4)
    a64 = soft_alignment(x, y, x_lens, y_lens, gamma=0.1)
    a32 = soft_alignment(x.float(), y.float(), x_lens, y_lens, gamma=0.1)
    assert _rel_close(a32, a64, 1e-4)


# --------------------------------------------------------------------------- band


@pytest.mark.parametrize("backend", BACKENDS)
def test_band_equals_infinite_cost_outside_band(backend):
    x, y, x_lens, y_lens = _pairs(8, n_max=12, m_max=5)
    for bandwidth in (0, 1, 3):
        values = soft_dtw(x, y, x_lens, y_lens, gamma=0.5, bandwidth=bandwidth, backend=backend)
        mask = band_mask(x_lens, y_lens, 12, 5, bandwidth)
        D = sqeuclidean_distance(x, y).masked_fill(~mask, float("inf"))
        R = _reference.forward(D, x_lens, y_lens, 0.5, -1)
        expected = R[torch.arange(3), x_lens, y_lens]
        assert torch.isfinite(values).all()
        assert _rel_close(values, expected, 1e-10)
        align = soft_alignment(x, y, x_lens, y_lens, gamma=0.5, bandwidth=bandwidth)
        assert align[~mask].abs().sum() == 0
    wide = soft_dtw(x, y, x_lens, y_lens, gamma=0.5, bandwidth=100, backend=backend)
    assert _rel_close(wide, soft_dtw(x, y, x_lens, y_lens, gamma=0.5, backend=backend), 1e-12)


def test_band_is_connected_for_very_unequal_lengths():
    mask = band_mask(torch.tensor([3, 20]), torch.tensor([20, 3]), 20, 20, 0)
    for b in range(2):
        rows = mask[b].any(1).nonzero().flatten()
        assert rows.numel() == [3, 20][b]
        assert mask[b, 0, 0] and mask[b, rows[-1], mask[b, rows[-1]].nonzero().max()]
    x = torch.randn(1, 3, 2, dtype=torch.float64)
    y = torch.randn(1, 40, 2, dtype=torch.float64)
    assert torch.isfinite(soft_dtw(x, y, bandwidth=0)).all()


# --------------------------------------------------------------------------- numerics


def test_small_gamma_long_sequences_are_finite():
    gen = torch.Generator().manual_seed(9)
    x = torch.nn.functional.normalize(torch.randn(1, 4096, 8, generator=gen), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(1, 4000, 8, generator=gen), dim=-1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    value = soft_dtw(x, y, gamma=0.001)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(y.grad).all() and x.grad.abs().sum() > 0
    small = soft_dtw_divergence(x[:, :300], y[:, :280], gamma=0.001)
    assert torch.isfinite(small).all()


def test_soft_alignment_is_an_expected_alignment():
    x, y, x_lens, y_lens = _pairs(10, n_max=8, m_max=6)
    align = soft_alignment(x, y, x_lens, y_lens, gamma=0.3)
    assert align.shape == (3, 8, 6)
    assert (align >= 0).all() and (align <= 1 + 1e-12).all()
    for b in range(3):
        n, m = int(x_lens[b]), int(y_lens[b])
        # every frame of x is matched at least once along any path, and the path starts and
        # ends at the corners
        assert (align[b, :n, :m].sum(1) >= 1 - 1e-9).all()
        assert (align[b, :n, :m].sum(0) >= 1 - 1e-9).all()
        assert abs(float(align[b, 0, 0]) - 1) < 1e-12
        assert abs(float(align[b, n - 1, m - 1]) - 1) < 1e-12
    z = torch.randn(1, 5, 3, dtype=torch.float64)
    assert torch.allclose(soft_alignment(z, z, gamma=1e-3), torch.eye(5, dtype=torch.float64)[None])


# --------------------------------------------------------------------------- distances


def test_distances_match_explicit_formulas():
    x, y, _, _ = _pairs(11)
    explicit = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    assert torch.allclose(sqeuclidean_distance(x, y), explicit, atol=1e-12)
    cos = 1 - torch.nn.functional.cosine_similarity(x[:, :, None, :], y[:, None, :, :], dim=-1)
    assert torch.allclose(cosine_distance(x, y), cos, atol=1e-12)
    l1 = lambda a, b: torch.cdist(a, b, p=1)  # noqa: E731
    assert torch.equal(pairwise_distance(x, y, l1), l1(x, y))
    via_callable = soft_dtw(x, y, gamma=0.5, distance=lambda a, b: cosine_distance(a, b))
    assert _rel_close(via_callable, soft_dtw(x, y, gamma=0.5, distance="cosine"), 1e-12)


# --------------------------------------------------------------------------- modules, errors


def test_modules_and_hyperpyyaml():
    from hyperpyyaml import load_hyperpyyaml

    hparams = load_hyperpyyaml(
        "loss: !new:lasersb.alignment.SoftDTWDivergence\n  gamma: 0.1\n"
        "sdtw: !new:lasersb.alignment.SoftDTW\n  gamma: 0.5\n  bandwidth: 2\n"
    )
    assert hparams["loss"].gamma == 0.1 and "gamma=0.1" in repr(hparams["loss"])
    z_a = torch.nn.functional.normalize(torch.randn(2, 9, 256), dim=-1)
    z_b = torch.nn.functional.normalize(torch.randn(2, 7, 256), dim=-1)
    lens_a, lens_b = torch.tensor([9, 6]), torch.tensor([7, 7])
    loss = hparams["loss"](z_a, z_b, lens_a, lens_b)
    assert loss.shape == (2,) and loss.dtype == torch.float32
    expected = soft_dtw_divergence(z_a, z_b, lens_a, lens_b, gamma=0.1)
    assert torch.equal(loss, expected)
    assert torch.equal(
        hparams["sdtw"](z_a, z_b, [9, 6], [7, 7]),
        soft_dtw(z_a, z_b, lens_a, lens_b, gamma=0.5, bandwidth=2),
    )
    assert isinstance(hparams["sdtw"], SoftDTW) and isinstance(hparams["loss"], SoftDTWDivergence)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x_lens=[3, 0]), "zero-length"),
        (dict(y_lens=torch.tensor([0, 0])), "zero-length"),
        (dict(x_lens=[3, 9]), "larger than the padded size"),
        (dict(x_lens=torch.tensor([0.5, 1.0])), "integer frame counts"),
        (dict(x_lens=[3]), "shape"),
        (dict(gamma=0.0), "gamma"),
        (dict(bandwidth=-2), "bandwidth"),
        (dict(bandwidth=1.5), "bandwidth"),
        (dict(distance="manhattan"), "unknown distance"),
        (dict(distance=lambda a, b: a), "must return a tensor of shape"),
        (dict(backend="cuda"), "unknown soft-DTW backend"),
    ],
)
def test_user_errors_are_clear(kwargs, match):
    x, y = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    with pytest.raises((ValueError, TypeError), match=match):
        soft_dtw_divergence(x, y, **kwargs)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="zero frames"):
        soft_dtw(torch.randn(2, 0, 3), torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="unsqueeze"):
        soft_dtw(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="share B and D"):
        soft_dtw(torch.randn(2, 4, 3), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="unknown distance"):
        SoftDTWDivergence(distance="l7")


def test_numba_kernels_are_cached_on_disk():
    from lasersb.alignment import _numba

    for kernel in (_numba._forward_kernel, _numba._backward_kernel):
        assert kernel._cache.__class__.__name__ != "NullCache"
    R = _numba.forward(torch.rand(1, 3, 3), torch.tensor([3]), torch.tensor([3]), 1.0, -1)
    assert np.isfinite(R[0, 1:, 1:].numpy()).all()
