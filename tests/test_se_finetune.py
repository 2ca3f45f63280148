"""Tests of lasersb.brains.se_finetune on the mini corpus with a tiny frozen HuBERT.

Each loss variant trains a few steps and lowers its (seeded) loss; the zero-padding really
shifts positions (lengths, offsets, dropped frames); the soft-DTW variant handles utterances of
different lengths in one batch.
"""

from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from data_prep.noisy_prepare import noisy_dataset, prepare_noisy_librispeech
from lasersb.alignment import SoftDTWDivergence
from lasersb.alignment.frame_losses import frame_mse, soft_dtw_frame_loss
from lasersb.brains.se_finetune import SEFinetuneBrain
from lasersb.models.enhancement import Demucs, STFTMaskEnhancer
from lasersb.models.upstream import SSLUpstream


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch and one numba thread: the 2 CI cores are shared (oversubscription is ~10x)."""
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)


@pytest.fixture(scope="module")
def batches(mini_corpus, tmp_path_factory):
    """Two fixed batches of 3 noisy/clean pairs (utterances cropped to 1.0-1.4 s)."""
    out = tmp_path_factory.mktemp("se_noisy")
    manifests = prepare_noisy_librispeech(mini_corpus, mini_corpus / "DEMAND", out,
                                          splits=["test-clean"], unseen_types=[],
                                          write_mixtures=False)  # fmt: skip
    dataset = noisy_dataset(manifests["seen"]["test-clean"])
    items = []
    for index, length in enumerate([16000, 19200, 22400, 16000, 22400, 19200]):
        item = dict(dataset[index])
        item["noisy_sig"], item["clean_sig"] = (
            item["noisy_sig"][:length],
            item["clean_sig"][:length],
        )
        items.append(item)
    return [PaddedBatch(items[:3]), PaddedBatch(items[3:])]


@pytest.fixture(scope="module")
def upstream(tiny_upstreams):
    return SSLUpstream(tiny_upstreams["hubert"], trainable_layers=0)


def make_brain(upstream, loss, enhancer=None, tmp_path=None, **extra):
    hparams = {
        "loss": loss,
        "ssl_layers": [3],
        "ssl_hop": 320,
        "zeropad_fraction": [0.02, 0.05],
        "zeropad_where": "start",
        "speed_factors": [0.9, 1.1],
        "soft_dtw": SoftDTWDivergence(gamma=0.1),
        "signal_loss_weight": 0.0,
        "feature_reduction": "sum",
        "softdtw_length_norm": False,
        "valid_seed": 7,
        "lr_schedule": None,
        "train_logger": None,
        "tensorboard_logger": None,
        "num_checkpoints_to_keep": 2,
        "output_folder": str(tmp_path),
        **extra,
    }
    enhancer = enhancer or STFTMaskEnhancer(n_fft=128, hop_length=32, hidden=16, num_layers=1)
    return SEFinetuneBrain(
        modules={"enhancer": enhancer, "upstream": upstream},
        opt_class=lambda params: torch.optim.Adam(params, lr=3e-3),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )


def seeded_loss(brain, batch):
    """The loss at the VALID stage (seeded reference draws), without metric tracking."""
    brain.step = 0
    with torch.no_grad():
        enhanced, lens = brain.compute_forward(batch, sb.Stage.TRAIN)
        clean, _ = batch.clean_sig
        ref, ref_lens, offsets = brain.reference(clean, lens, brain._generator(sb.Stage.VALID))
        return float(brain.representation_loss(enhanced, lens, ref, ref_lens, offsets).mean())


@pytest.mark.parametrize("loss", ["mse", "mse_zeropad", "softdtw"])
def test_each_loss_trains_and_lowers_its_loss(loss, batches, upstream, tmp_path):
    torch.manual_seed(0)
    brain = make_brain(upstream, loss, tmp_path=tmp_path)
    brain.init_optimizers()
    before = [seeded_loss(brain, b) for b in batches]
    for _ in range(4):
        for batch in batches:
            brain.fit_batch(batch)  # also calls on_fit_batch_end (schedule, loss curve)
    after = [seeded_loss(brain, b) for b in batches]
    assert sum(after) < sum(before), (loss, before, after)
    assert all(p.grad is None for p in upstream.parameters())  # the SSL model stays frozen
    curve = (tmp_path / "loss_curve.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr" and len(curve) == 9


def test_zero_padding_shifts_positions(batches, upstream, tmp_path):
    brain = make_brain(upstream, "mse_zeropad", tmp_path=tmp_path)
    clean, lens = batches[0].clean_sig
    samples = torch.round(lens * clean.shape[1]).long()
    ref, ref_lens, offsets = brain.reference(clean, lens, torch.Generator().manual_seed(0))
    ref_samples = torch.round(ref_lens * ref.shape[1]).long()
    pad = ref_samples - samples
    assert bool((pad % 320 == 0).all()) and bool((pad > 0).all())
    assert bool((pad >= 0.02 * samples - 320).all()) and bool((pad <= 0.05 * samples).all())
    assert torch.equal(offsets * 320, pad)  # where=start: all zeros before the speech
    for i in range(clean.shape[0]):
        assert float(ref[i, : pad[i]].abs().max()) == 0.0
        assert torch.equal(ref[i, pad[i] : ref_samples[i]], clean[i, : samples[i]])
    # SSL frames: the reference has exactly `offset` more valid frames; its padding mask agrees.
    out_clean, out_ref = upstream(clean, lens), upstream(ref, ref_lens)
    assert torch.equal(out_ref.frame_lens, out_clean.frame_lens + offsets)
    assert torch.equal(out_ref.padding_mask.sum(1), ref.shape[1] // 320 - out_ref.frame_lens
                       + (out_ref.padding_mask.shape[1] - ref.shape[1] // 320))  # fmt: skip
    # Identical content, shifted positions: MSE > 0 but far below that of unrelated speech.
    with torch.no_grad():
        shifted = float(brain.representation_loss(clean, lens, ref, ref_lens, offsets).mean())
        brain.hparams.loss = "mse"
        same = float(brain.representation_loss(clean, lens, clean, lens, offsets * 0).mean())
        other = clean.roll(1, dims=0)
        unrelated = float(brain.representation_loss(clean, lens, other, lens, offsets * 0).mean())
    assert same < 1e-8 < shifted < 0.2 * unrelated
    # where="end": the content stays at the start (offset 0), zeros after it.
    brain.hparams.zeropad_where, brain.hparams.loss = "end", "mse_zeropad"
    _, _, end_offsets = brain.reference(clean, lens, torch.Generator().manual_seed(0))
    assert int(end_offsets.abs().sum()) == 0


def test_softdtw_handles_mixed_lengths(batches, upstream, tmp_path):
    brain = make_brain(upstream, "softdtw", tmp_path=tmp_path)
    clean, lens = batches[0].clean_sig
    ref, ref_lens, _ = brain.reference(clean, lens, torch.Generator().manual_seed(1))
    enh_states, enh_frames = brain.ssl_states(clean, lens)
    ref_states, ref_frames = brain.ssl_states(ref, ref_lens)
    assert len(set(enh_frames.tolist())) == 3  # three lengths in the batch
    assert not torch.equal(enh_frames, ref_frames)  # speed-perturbed: other lengths
    batched = soft_dtw_frame_loss(enh_states[0], ref_states[0], enh_frames, ref_frames,
                                  brain.hparams.soft_dtw)  # fmt: skip
    for i in range(3):
        n, m = int(enh_frames[i]), int(ref_frames[i])
        single = soft_dtw_frame_loss(enh_states[0][i : i + 1, :n], ref_states[0][i : i + 1, :m],
                                     [n], [m], brain.hparams.soft_dtw)  # fmt: skip
        assert torch.allclose(batched[i], single[0], atol=1e-5)
    # A Demucs front-end trains through it: finite loss, gradients on every parameter.
    demucs = Demucs(hidden=4, depth=3, resample=2)
    brain = make_brain(upstream, "softdtw", enhancer=demucs, tmp_path=tmp_path)
    noisy, lens = batches[1].noisy_sig
    enhanced = demucs(noisy, lens)
    ref, ref_lens, offsets = brain.reference(batches[1].clean_sig[0], lens)
    loss = brain.representation_loss(enhanced, lens, ref, ref_lens, offsets)
    assert loss.shape == (3,) and bool(torch.isfinite(loss).all())
    loss.mean().backward()
    assert all(p.grad is not None for p in demucs.parameters())


def test_frame_mse_and_configuration_errors(upstream, tmp_path):
    x = torch.randn(2, 5, 4)
    # The paper's SSL-MSE: ||x_i - x'_i||^2 summed over the 4 dimensions, mean over frames.
    assert torch.allclose(frame_mse(x, x + 1, torch.tensor([5, 2])), torch.full((2,), 4.0))
    assert torch.allclose(frame_mse(x, x + 1, torch.tensor([5, 2]), "mean"), torch.ones(2))
    with pytest.raises(ValueError, match="feature_reduction"):
        frame_mse(x, x, torch.tensor([5, 2]), "max")
    # The soft-DTW variant uses the same frame distance: identical one-frame sequences at
    # distance 1 per dimension cost H (no 1/sqrt(H) or length rescaling by default).
    sdtw = SoftDTWDivergence(gamma=0.1)
    one, lens1 = torch.zeros(1, 1, 4), torch.tensor([1])
    paper = soft_dtw_frame_loss(one, one + 1, lens1, lens1, sdtw)
    mean = soft_dtw_frame_loss(one, one + 1, lens1, lens1, sdtw, feature_reduction="mean")
    assert torch.allclose(paper, 4.0 * mean, rtol=1e-4) and paper.item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="loss"):
        make_brain(upstream, "l2", tmp_path=tmp_path)
    with pytest.raises(ValueError, match="ssl_layers"):
        make_brain(upstream, "mse", tmp_path=tmp_path, ssl_layers=[9])
    trainable = SimpleNamespace()  # an upstream with trainable layers is refused
    trainable.up = SSLUpstream(upstream.model, trainable_layers=1)
    with pytest.raises(ValueError, match="frozen"):
        make_brain(trainable.up, "mse", tmp_path=tmp_path)
    upstream.model.requires_grad_(False)  # SSLUpstream(trainable_layers=1) unfroze a shared layer
