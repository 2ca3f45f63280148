"""Unit tests of the DINO building blocks: features, trunk, head, loss, EMA, multi-crop, checkpoint.

Each piece is checked against a direct computation from its definition: the sliding mean
normalisation against a per-frame loop (Kaldi's centred window), the DINO loss against the
double loop over (teacher crop, student crop) pairs, the centre and EMA updates against their
formulas, and the exported embedding checkpoint against the model that wrote it.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lasersb.models.dino import (
    DINOHead,
    DINOLoss,
    MultiCrop,
    collapse_statistics,
    ema_update_,
    load_embedding_model,
    random_crops,
    save_embedding_model,
    teacher_momentum,
)
from lasersb.models.fbank import LogFbankSTMN, sliding_mean_normalisation
from lasersb.models.resnet import LightResNet34, SpeakerEmbeddingModel, StatisticsPooling
from lasersb.schedules import cosine_schedule


def tiny_model(**kw):
    opts = dict(embedding_dim=16, n_mels=24, base_channels=4, num_blocks=(1, 1, 1, 1))
    opts.update(kw)
    return SpeakerEmbeddingModel(**opts)


# ----------------------------------------------------------------------------- features
def kaldi_sliding_cmn(x, n, window):
    """Per-frame loop of Kaldi's apply-cmvn-sliding --center=true (means only)."""
    out = torch.zeros_like(x)
    for t in range(n):
        start = t - window // 2
        end = start + window
        if start < 0:
            end -= start
            start = 0
        if end > n:
            start -= end - n
            end = n
            start = max(start, 0)
        out[t] = x[t] - x[start:end].mean(0)
    return out


@pytest.mark.parametrize("window", [1, 4, 7, 50])
def test_sliding_mean_normalisation_matches_kaldi_loop(window):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 20, 5, generator=g)
    lens = torch.tensor([20, 13, 3])
    out = sliding_mean_normalisation(feats, lens, window)
    for b, n in enumerate(lens.tolist()):
        expected = kaldi_sliding_cmn(feats[b], n, window)
        torch.testing.assert_close(out[b, :n], expected[:n], rtol=1e-5, atol=1e-5)
        assert bool((out[b, n:] == 0).all())


def test_fbank_features_do_not_depend_on_batch_padding():
    fbank = LogFbankSTMN(n_mels=40)
    g = torch.Generator().manual_seed(1)
    short = torch.randn(1, 8000, generator=g)
    batch = torch.zeros(2, 16000)
    batch[0] = torch.randn(16000, generator=g)
    batch[1, :8000] = short
    alone, alone_lens = fbank(short)
    padded, lens = fbank(batch, torch.tensor([1.0, 0.5]))
    assert lens.tolist() == [101, 51] and alone_lens.tolist() == [51]
    # The last valid frames' STFT windows see the padding zeros vs the signal's own reflection
    # padding; the frames before them must be identical.
    torch.testing.assert_close(padded[1, :48], alone[0, :48], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- trunk
def test_statistics_pooling_uses_only_valid_frames():
    x = torch.randn(2, 3, 10)
    lens = torch.tensor([10, 4])
    pooled = StatisticsPooling(eps=0)(x, lens)
    ref = x[1, :, :4]
    torch.testing.assert_close(pooled[1, :3], ref.mean(-1))
    torch.testing.assert_close(pooled[1, 3:], ref.var(-1, unbiased=False).sqrt())


def test_light_resnet34_layout_and_ecapa_option():
    net = LightResNet34()
    channels = [stage[0].conv1.out_channels for stage in net.stages]
    assert channels == [16, 32, 64, 128]
    assert [len(stage) for stage in net.stages] == [3, 4, 6, 3]
    assert net.pooled_dim == 2 * 128 * 10  # 80 Mel bands / 8, mean and std
    model = tiny_model(encoder="ecapa", ecapa_channels=(16, 16, 16, 16, 48)).eval()
    assert model(torch.randn(2, 4000), torch.tensor([1.0, 0.6])).shape == (2, 16)
    with pytest.raises(ValueError, match="encoder must be one of"):
        tiny_model(encoder="transformer")


# ----------------------------------------------------------------------------- head and loss
def test_dino_head_prototypes_are_unit_norm_and_gain_frozen():
    head = DINOHead(in_dim=8, out_dim=64, hidden_dim=32, bottleneck_dim=6)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(64))
    logits = head(torch.randn(5, 8))
    assert logits.shape == (5, 64) and float(logits.detach().abs().max()) <= 1.0 + 1e-5
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    assert len(head.last_layer_parameters()) == 2


def test_dino_loss_matches_the_pair_loop_and_updates_the_centre():
    g = torch.Generator().manual_seed(0)
    batch, k, n_crops = 3, 10, 4
    student = torch.randn(n_crops * batch, k, generator=g)
    teacher = torch.randn(2 * batch, k, generator=g)
    loss_fn = DINOLoss(out_dim=k, num_global=2, student_temp=0.1, teacher_temp=0.04)
    loss_fn.center.fill_(0.3)
    center = loss_fn.center.clone()
    loss = loss_fn(student, teacher)
    total, terms = 0.0, 0
    for iq in range(2):
        q = F.softmax((teacher[iq * batch : (iq + 1) * batch] - center) / 0.04, dim=-1)
        for v in range(n_crops):
            if v == iq:
                continue
            logp = F.log_softmax(student[v * batch : (v + 1) * batch] / 0.1, dim=-1)
            total += (-(q * logp).sum(-1)).mean()
            terms += 1
    assert terms == 2 * (n_crops - 1)
    torch.testing.assert_close(loss, total / terms)
    expected_center = 0.9 * center + 0.1 * teacher.mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected_center)
    # In eval mode the centre is left alone.
    loss_fn.eval()
    loss_fn(student, teacher)
    torch.testing.assert_close(loss_fn.center, expected_center)
    with pytest.raises(ValueError, match="num_global"):
        loss_fn(student, teacher[:5])


def test_teacher_temperature_warmup():
    loss_fn = DINOLoss(8, warmup_teacher_temp=0.02, teacher_temp=0.04, warmup_teacher_temp_steps=10)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.02)
    assert loss_fn.teacher_temperature(5) == pytest.approx(0.03)
    assert loss_fn.teacher_temperature(10) == pytest.approx(0.04)


def test_collapse_statistics_bounds():
    k = 16
    uniform = collapse_statistics(torch.full((4, k), 1 / k))
    assert uniform["entropy"] == pytest.approx(math.log(k))
    onehot_same = collapse_statistics(F.one_hot(torch.zeros(4, dtype=torch.long), k).float())
    assert onehot_same["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert onehot_same["kl_uniform"] == pytest.approx(math.log(k))
    onehot_spread = collapse_statistics(F.one_hot(torch.arange(4) * 4, k).float())
    assert onehot_spread["kl_uniform"] == pytest.approx(math.log(k) - math.log(4))


# ----------------------------------------------------------------------------- schedules, EMA
def test_schedules_and_ema_update():
    assert teacher_momentum(0, 10) == pytest.approx(0.996)
    assert teacher_momentum(5, 10) == pytest.approx(0.998)
    assert teacher_momentum(10, 10) == pytest.approx(1.0)
    assert cosine_schedule(0, 10, 1.0, 0.0, warmup_steps=4) == 0.0
    assert cosine_schedule(2, 10, 1.0, 0.0, warmup_steps=4) == pytest.approx(0.5)
    teacher, student = tiny_model(), tiny_model()
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    buffers = {n: b.clone() for n, b in teacher.named_buffers()}
    ema_update_(teacher, student, 0.9)
    for name, param in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        torch.testing.assert_close(param, expected)
    for name, buf in teacher.named_buffers():
        assert torch.equal(buf, buffers[name])


# ----------------------------------------------------------------------------- multi-crop
def test_random_crops_stay_in_the_valid_part_and_repeat_short_utterances():
    wavs = torch.zeros(3, 100)
    wavs[0] = torch.arange(1, 101).float()
    wavs[1, :40] = torch.arange(1, 41).float()
    wavs[2, :10] = torch.arange(1, 11).float()
    lens = torch.tensor([1.0, 0.4, 0.1])
    g = torch.Generator().manual_seed(0)
    crops = random_crops(wavs, lens, 25, num_crops=5, generator=g).view(5, 3, 25)
    assert bool((crops != 0).all())  # never padding
    steps = crops[:, :2, 1:] - crops[:, :2, :-1]
    assert bool((steps == 1).all())  # contiguous chunks of long-enough utterances
    repeated = [float(v % 10 + 1) for v in range(25)]  # no room: offset 0, circular repeat
    assert all(crops[c, 2].tolist() == repeated for c in range(5))
    starts = crops[:, 0, 0]
    assert len(set(starts.tolist())) > 1  # offsets differ between crops
    again = random_crops(wavs, lens, 25, 5, torch.Generator().manual_seed(0)).view(5, 3, 25)
    assert torch.equal(crops, again)


def test_multicrop_shapes_are_crop_major():
    crop = MultiCrop(
        num_global=2, global_seconds=0.5, num_local=3, local_seconds=0.25, sample_rate=1000
    )
    wavs = torch.arange(4).float().view(4, 1).repeat(1, 2000)
    global_crops, local_crops = crop(wavs, torch.ones(4))
    assert global_crops.shape == (8, 500) and local_crops.shape == (12, 250)
    assert global_crops[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] * 2
    assert local_crops[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] * 3


# ----------------------------------------------------------------------------- checkpoint
def test_embedding_checkpoint_round_trip_and_errors(tmp_path):
    model = tiny_model()
    # Non-trivial batch-norm statistics, so that eval outputs depend on them.
    model.train()
    model(torch.randn(4, 4000))
    model.eval()
    path = save_embedding_model(model, tmp_path / "run", {"source": "test", "step": 3})
    assert path == tmp_path / "run" / "embedding_model.ckpt"
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "lasersb.speaker_embedding/1"
    assert payload["config"]["embedding_dim"] == 16
    loaded = load_embedding_model(tmp_path)  # found below the folder
    wavs = torch.randn(3, 4000)
    lens = torch.tensor([1.0, 0.8, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(loaded(wavs, lens), model(wavs, lens))
    assert loaded.checkpoint_meta == {"source": "test", "step": 3}
    assert not loaded.training
    with pytest.raises(FileNotFoundError, match="embedding_model.ckpt"):
        load_embedding_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Train a DINO or x-vector"):
        load_embedding_model(tmp_path / "empty")
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a lasersb.speaker_embedding/1"):
        load_embedding_model(bad)


def test_dino_optimiser_groups_as_hyperion():
    """No weight decay on biases and 1-D parameters; the weights get the optimiser's L2."""
    from types import SimpleNamespace

    from lasersb.brains.dino import DINOBrain

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    fake = SimpleNamespace(
        modules=SimpleNamespace(student=net),
        hparams=SimpleNamespace(weight_decay_skip_1d=True),
        opt_class=lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, amsgrad=True),
        checkpointer=None,
    )
    DINOBrain.init_optimizers(fake)
    decayed, plain = fake.optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert len(plain["params"]) == 3 and decayed["amsgrad"]
