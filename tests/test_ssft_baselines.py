"""The LASER paper's baselines: SCORE (LASER Brain configuration) and Spin (its own Brain).

Cheap unit checks (Sinkhorn-Knopp against a NumPy reference, the codebook's normalisation, the
speaker perturbation's measured pitch and formant changes) and one short fine-tuning run per
method on the mini corpus with tiny upstreams (the dev loss falls; SCORE's target stays the
original upstream; Spin's assignments do not collapse and the two views agree more often than
chance).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from speech_signals import SR, median_f0, synthetic_vowel

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech" / "ssft"


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ Sinkhorn / codebook
def _sinkhorn_reference(scores, epsilon, iterations):
    """SwAV's Algorithm (the Spin release's compute_sinkhorn), written out in NumPy float64."""
    q = np.exp(scores.astype(np.float64) / epsilon).T  # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


@pytest.mark.parametrize(("epsilon", "iterations"), [(0.02, 3), (0.5, 10)])
def test_sinkhorn_equals_reference(epsilon, iterations):
    from lasersb.models.spin import sinkhorn_knopp

    torch.manual_seed(0)
    # Cosine-like scores in [-1, 1] (unit frames against unit codewords), as in Spin.
    scores = torch.tanh(torch.randn(12, 5))
    ours = sinkhorn_knopp(scores, epsilon, iterations).double().numpy()
    np.testing.assert_allclose(ours, _sinkhorn_reference(scores.numpy(), epsilon, iterations),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(ours.sum(1), np.ones(12), rtol=1e-5)


def test_codebook_normalised_after_updates():
    from lasersb.models.spin import SwappedPredictionLoss

    torch.manual_seed(0)
    loss = SwappedPredictionLoss(8, num_codewords=6)
    optimiser = torch.optim.SGD(loss.parameters(), lr=1.0)
    for _ in range(3):
        optimiser.zero_grad()
        loss(torch.randn(20, 8), torch.randn(20, 8))["loss"].backward()
        optimiser.step()
        assert not torch.allclose(loss.codebook.weight.norm(dim=1), torch.ones(6))
        loss.normalise_codebook()
        assert torch.allclose(loss.codebook.weight.norm(dim=1), torch.ones(6), atol=1e-6)


# ------------------------------------------------------------------ speaker perturbation


def _envelope_centroid(y, below=4000.0):
    """Mean frequency of the time-averaged cepstral envelope below ``below`` Hz."""
    from lasersb.augment.speaker import spectral_envelope

    window = torch.hann_window(512)
    mag = torch.stft(torch.tensor(y)[None], 512, 128, window=window, return_complex=True).abs()
    envelope = spectral_envelope(mag, 16)[0].mean(-1).numpy()
    freqs = np.arange(envelope.shape[0]) * SR / 512
    keep = freqs < below
    return float((freqs[keep] * envelope[keep]).sum() / envelope[keep].sum())


def test_perturbation_shifts_pitch_and_formants_measurably():
    from lasersb.augment.speaker import SpeakerPerturbation

    x = synthetic_vowel()
    wavs = torch.tensor(x)[None].repeat(3, 1)
    perturb = SpeakerPerturbation()
    y = perturb(wavs, None, formant=[1.0, 1.3, 0.8], semitones=[5.0, 0.0, 0.0]).numpy()
    f0 = median_f0(x)
    # Pitch: +5 semitones = x1.335; formants alone leave the pitch where it was.
    assert median_f0(y[0]) / f0 == pytest.approx(2 ** (5 / 12), rel=0.03)
    assert median_f0(y[1]) / f0 == pytest.approx(1.0, rel=0.03)
    # Formants: the envelope moves with the formant ratio, and stays with a pure pitch shift.
    centroid = _envelope_centroid(x)
    assert _envelope_centroid(y[1]) / centroid > 1.15
    assert _envelope_centroid(y[2]) / centroid < 0.9
    assert _envelope_centroid(y[0]) / centroid == pytest.approx(1.0, rel=0.08)


def test_random_equaliser_changes_band_energies():
    from lasersb.augment.speaker import RandomEqualiser

    torch.manual_seed(0)
    noise = 0.1 * torch.randn(2, SR)
    y = RandomEqualiser()(noise, None, torch.Generator().manual_seed(1))
    spec_x = torch.fft.rfft(noise).abs().pow(2)[:, :8000].reshape(2, -1, 100).sum(-1)
    spec_y = torch.fft.rfft(y).abs().pow(2)[:, :8000].reshape(2, -1, 100).sum(-1)
    gain_db = 10 * torch.log10(spec_y / spec_x)
    assert float(gain_db.std(dim=1).min()) > 2.0  # several dB of spectral colouring
    assert float(gain_db.abs().max()) < 40.0


# ------------------------------------------------------------------ short runs
def _overrides(mini_corpus, upstream, out, **extra):
    values = {
        "data_folder": str(mini_corpus / "LibriSpeech"),
        "upstream_source": str(upstream),
        "output_folder": str(out),
        "ckpt_interval_steps": 100,
        "valid_max_utterances": 8,
    }
    values.update(extra)
    return values


@pytest.fixture(scope="module")
def score_run(mini_corpus, tiny_upstreams, tmp_path_factory):
    from lasersb.brains.laser import LaserBrain
    from lasersb.config import load_hparams
    from lasersb.data.pipelines import dataloader_options

    torch.manual_seed(0)
    recipe = _module("score_ssft_train", RECIPE / "train.py")
    out = tmp_path_factory.mktemp("score")
    hparams = load_hparams(
        RECIPE / "hparams" / "score_mini.yaml",
        _overrides(mini_corpus, tiny_upstreams["hubert"], out, total_steps=12, warmup_steps=2,
                   lr=0.002, batch_size=4),
    )  # fmt: skip
    Path(hparams["output_folder"]).mkdir(parents=True, exist_ok=True)
    train_data, valid_data = recipe.build_datasets(hparams)
    brain = LaserBrain(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32", "noprogressbar": True},
        checkpointer=hparams["checkpointer"],
    )  # fmt: skip
    target_before = {k: v.clone() for k, v in brain.modules.target_upstream.state_dict().items()}
    valid_opts = dataloader_options(valid_data, batch_size=4)
    before = brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    brain.fit(
        hparams["epoch_counter"], train_data, valid_data,
        train_loader_kwargs=dataloader_options(train_data, batch_size=4, shuffle=True),
        valid_loader_kwargs=dict(valid_opts),
    )  # fmt: skip
    after = brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    return {"brain": brain, "before": before, "after": after, "target_before": target_before}


def test_score_lowers_its_loss_with_a_frozen_target(score_run):
    brain = score_run["brain"]
    assert brain.optimizer_step == 12
    assert score_run["after"] < score_run["before"], (score_run["before"], score_run["after"])
    target = brain.modules.target_upstream
    assert not any(p.requires_grad for p in target.parameters())
    for key, value in target.state_dict().items():
        assert torch.equal(value, score_run["target_before"][key]), key
    # The fine-tuned upstream moved away from the target copy.
    ours = brain.modules.upstream.model.encoder.layers[-1].state_dict()
    theirs = target.upstream.model.encoder.layers[-1].state_dict()
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)


def test_score_target_dropout_follows_train_mode(score_run):
    target = score_run["brain"].modules.target_upstream
    target.train()
    assert target.upstream.model.training  # the release's copy is never put in eval mode
    target.eval()
    assert not target.upstream.model.training


@pytest.fixture(scope="module")
def spin_run(mini_corpus, tiny_upstreams, tmp_path_factory):
    from lasersb.brains.spin import SpinBrain
    from lasersb.config import load_hparams
    from lasersb.data.pipelines import TotalLengthBatchSampler, dataloader_options

    torch.manual_seed(0)
    recipe = _module("spin_ssft_train", RECIPE / "train.py")
    out = tmp_path_factory.mktemp("spin")
    hparams = load_hparams(
        RECIPE / "hparams" / "spin_mini.yaml",
        _overrides(mini_corpus, tiny_upstreams["hubert"], out, total_steps=30),
    )
    Path(hparams["output_folder"]).mkdir(parents=True, exist_ok=True)
    train_data, valid_data = recipe.build_datasets(hparams)
    brain = SpinBrain(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32", "noprogressbar": True},
        checkpointer=hparams["checkpointer"],
    )  # fmt: skip
    valid_opts = dataloader_options(valid_data, batch_size=8)
    brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    before = dict(brain.test_stats)
    sampler = TotalLengthBatchSampler(
        train_data, hparams["batch_total_seconds"], crop_seconds=3.0, seed=0
    )
    brain.fit(
        hparams["epoch_counter"], train_data, valid_data,
        train_loader_kwargs={"batch_sampler": sampler},
        valid_loader_kwargs=dict(valid_opts),
    )  # fmt: skip
    brain.evaluate(valid_data, test_loader_kwargs=dict(valid_opts))
    return {"brain": brain, "hparams": hparams, "before": before, "after": dict(brain.test_stats)}


def test_spin_lowers_its_loss(spin_run):
    assert spin_run["brain"].optimizer_step == 30
    assert spin_run["after"]["loss"] < spin_run["before"]["loss"], spin_run


def test_spin_assignments_do_not_collapse_and_views_agree(spin_run):
    codewords = spin_run["hparams"]["num_codewords"]
    after = spin_run["after"]
    # Hard-assignment perplexity over a dev batch: at least half the codebook in use (a
    # collapse to one codeword gives 1).
    assert after["code_perplexity"] > codewords / 2, after
    # Both views assigned alike more often than chance (1 / K).
    assert after["accuracy"] > 1.0 / codewords, after


def test_spin_codebook_normalised_and_only_top_layers_trained(spin_run):
    brain = spin_run["brain"]
    weight = brain.modules.loss.codebook.weight
    assert torch.allclose(weight.norm(dim=1), torch.ones(weight.shape[0]), atol=1e-5)
    upstream = brain.modules.upstream
    layers = {n.split(".")[3] for n in upstream.trainable_parameter_names()}
    top = upstream.num_layers
    assert layers == {str(top - 2), str(top - 1)}, upstream.trainable_parameter_names()
    assert not any("encoder.layer_norm" in n for n in upstream.trainable_parameter_names())


def test_spin_export_reloads(spin_run, tmp_path):
    import transformers

    folder = spin_run["brain"].export_upstream(tmp_path / "upstream_hf")
    model = transformers.AutoModel.from_pretrained(folder)
    ours = spin_run["brain"].modules.upstream.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key
