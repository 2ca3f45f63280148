"""Tests of LASER's temporal regulariser (lasersb.alignment.temporal)."""

import math

import pytest
import torch

from lasersb.alignment import TemporalRegulariser, temporal_regulariser

# Three frames in 2-D: z0 = (1, 0), z1 = (0.6, 0.8), z2 = (0, 1).
# d01 = sqrt(0.4^2 + 0.8^2) = sqrt(0.8), d12 = sqrt(0.6^2 + 0.2^2) = sqrt(0.4), d02 = sqrt(2).
Z = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]], dtype=torch.float64)
D01, D12, D02 = math.sqrt(0.8), math.sqrt(0.4), math.sqrt(2.0)


def test_hand_computed_sigma0():
    # sigma = 0: every off-diagonal pair is "far" (y = 1) with weight w = (i-j)^2 + 1;
    # the diagonal is "near" with d = 0. Each unordered pair appears twice in the double sum.
    margin = 1.1
    expected = (
        2 * 2 * max(0.0, margin - D01)  # (0,1),(1,0): w = 2
        + 2 * 2 * max(0.0, margin - D12)  # (1,2),(2,1): w = 2
        + 2 * 5 * max(0.0, margin - D02)  # (0,2),(2,0): w = 5, hinge inactive (d02 > 1.1)
    ) / 9
    assert expected == pytest.approx(0.2991632, abs=1e-6)
    value = temporal_regulariser(Z, sigma=0, margin=margin)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_hand_computed_sigma1():
    # sigma = 1: neighbours |i-j| <= 1 are pulled together with d / w, only (0,2) is far.
    expected = (2 * D01 / 2 + 2 * D12 / 2 + 2 * 5 * max(0.0, 1.1 - D02)) / 9
    assert expected == pytest.approx(0.1696537, abs=1e-6)
    value = TemporalRegulariser(sigma=1, margin=1.1)(Z)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_padded_batch_equals_loop_and_padding_gets_no_gradient():
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(3, 10, 8, generator=gen), dim=-1)
    z = z.double().requires_grad_(True)
    lens = torch.tensor([10, 6, 1])
    reg = TemporalRegulariser(sigma=1, margin=1.1)
    values = reg(z, lens)
    values.sum().backward()
    for b in range(3):
        n = int(lens[b])
        zb = z[b : b + 1, :n].detach().clone().requires_grad_(True)
        single = reg(zb)
        single.sum().backward()
        assert values[b].item() == pytest.approx(single.item(), rel=1e-12)
        assert torch.allclose(z.grad[b, :n], zb.grad[0], atol=1e-12)
        assert z.grad[b, n:].abs().sum() == 0
    assert values[2].item() == 0.0  # a single frame: only d_00 = 0


def test_gradient_finite_with_repeated_frames():
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    value = temporal_regulariser(z)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(
        lambda a: temporal_regulariser(a, sigma=1), (Z.clone().requires_grad_(True),)
    )


def test_errors_are_clear():
    with pytest.raises(ValueError, match="integer frame counts"):
        temporal_regulariser(Z, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="drop empty"):
        temporal_regulariser(Z, torch.tensor([0]))
    with pytest.raises(ValueError, match="at least one frame"):
        temporal_regulariser(torch.zeros(1, 0, 2))
    with pytest.raises(ValueError, match="sigma and margin"):
        TemporalRegulariser(sigma=-1)
