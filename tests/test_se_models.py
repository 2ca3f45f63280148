"""Tests of lasersb.models.enhancement: Demucs (master64 layout), STFT masker, weight loading."""

import pytest
import torch

from lasersb.models.enhancement import (
    MASTER64_CONFIG,
    Demucs,
    EnhancedUpstream,
    STFTMaskEnhancer,
    build_enhancer,
    load_enhancer_state,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_master64_state_dict_layout_and_loading(tmp_path):
    model = Demucs(**MASTER64_CONFIG)
    state = model.state_dict()
    # The names and shapes of facebookresearch/denoiser's master64. Source: the release's
    # denoiser/pretrained.py builds master64 as ``Demucs(hidden=64)`` with every other argument at
    # denoiser/demucs.py's defaults (chin 1, chout 1, depth 5, kernel_size 8, stride 4, causal,
    # resample 4, growth 2, glu): encoder i is Conv1d(c_in, h_i, 8), ReLU, Conv1d(h_i, 2 h_i, 1),
    # GLU with h_i = 64 * 2**i; decoder i mirrors it with ConvTranspose1d(h_i, c_out, 8); the
    # causal model has a 2-layer unidirectional LSTM of width 1024 and no BLSTM linear.
    expected = {
        "encoder.0.0.weight": (64, 1, 8),
        "encoder.0.2.weight": (128, 64, 1),
        "encoder.4.0.weight": (1024, 512, 8),
        "decoder.0.0.weight": (2048, 1024, 1),
        "decoder.0.2.weight": (1024, 512, 8),
        "decoder.4.2.weight": (64, 1, 8),
        "lstm.lstm.weight_ih_l0": (4096, 1024),
        "lstm.lstm.weight_hh_l1": (4096, 1024),
    }
    for name, shape in expected.items():
        assert tuple(state[name].shape) == shape, name
    assert not any(name.startswith("lstm.linear") for name in state)  # causal: no BLSTM linear
    assert len(state) == 48  # 5 x (2 encoder + 2 decoder convs) x (weight, bias) + LSTM's 8
    # The parameter count of that layout, from the release's layer list above (33,533,569).
    hidden = [64 * 2**i for i in range(5)]
    below = [1, *hidden[:-1]]  # input channels of encoder i = output channels of decoder i
    convs = sum(
        (c * h * 8 + h)
        + (h * 2 * h + 2 * h)  # encoder i
        + (h * 2 * h + 2 * h)
        + (h * c * 8 + c)  # decoder i
        for h, c in zip(hidden, below)
    )
    lstm = 2 * (4 * 1024 * (1024 + 1024) + 2 * 4 * 1024)  # 2 layers: W_ih, W_hh, b_ih, b_hh
    assert convs + lstm == 33_533_569
    assert sum(v.numel() for v in state.values()) == convs + lstm
    # A released-style plain state dict loads strictly through pretrained_path.
    path = tmp_path / "master64.th"
    torch.save(state, path)
    loaded = Demucs(**{**MASTER64_CONFIG, "pretrained_path": path})
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    # The denoiser's training packages hold the weights under best_state / model.state.
    package = tmp_path / "package.th"
    torch.save({"model": {"state": state}, "best_state": state}, package)
    load_enhancer_state(Demucs(**MASTER64_CONFIG), package)
    with pytest.raises(ValueError, match="hidden=64"):
        load_enhancer_state(Demucs(hidden=48), path)
    with pytest.raises(FileNotFoundError, match="master64"):
        Demucs(hidden=8, depth=2, pretrained_path=tmp_path / "missing.th")


def test_demucs_lengths_masks_and_scale():
    torch.manual_seed(0)
    model = Demucs(hidden=8, depth=3, resample=2).eval()
    with torch.no_grad():
        for length in (400, 1601, 3333):
            assert model(torch.randn(2, length)).shape == (2, length)
        x = torch.randn(2, 4000)
        x[1, 2500:] = 0.0
        out = model(x, torch.tensor([1.0, 0.625]))
        assert float(out[1, 2500:].abs().max()) == 0.0
        # Input normalisation: scaling the input scales the output (up to the floor).
        assert torch.allclose(model(3 * x), 3 * model(x), atol=1e-3, rtol=1e-2)
        # The normalising std of an item ignores its padding: padded == alone (away from the
        # end, where the resampling filters see the other valid_length padding).
        alone = model(x[1:, :2500])
        assert torch.allclose(out[1, :2400], alone[0, :2400], atol=1e-5)


def test_stft_masker_near_identity_and_builder():
    model = build_enhancer("stft_mask", stft_mask={"n_fft": 128, "hop_length": 32, "hidden": 8})
    assert isinstance(model, STFTMaskEnhancer)
    x = torch.randn(2, 3000)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert float(torch.nn.functional.cosine_similarity(out, x, dim=1).min()) > 0.95
    with pytest.raises(ValueError, match="Unknown enhancer kind"):
        build_enhancer("wiener")


def test_gradients_reach_the_enhancer_through_the_frozen_upstream(tiny_upstreams):
    from lasersb.models.upstream import SSLUpstream

    upstream = SSLUpstream(tiny_upstreams["hubert"], trainable_layers=0)
    enhancer = Demucs(hidden=4, depth=2, resample=2)
    model = EnhancedUpstream(enhancer, upstream)
    out = model(torch.randn(2, 4000), torch.tensor([1.0, 0.7]))
    out.last_hidden_state.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enhancer.parameters())
    assert all(p.grad is None for p in upstream.parameters())
