"""Transfer Brain: freezing of the two-stage schedule, chunk averaging, checkpoint loading."""

import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch
from speechbrain.utils.epoch_loop import EpochCounter

from lasersb.brains.embedding_classifier import EmbeddingClassifierBrain
from lasersb.data.classification import classification_dataset
from lasersb.models.dino import save_embedding_model
from lasersb.models.embedding_classifier import (
    EmbeddingClassifier,
    chunk_posteriors,
    load_or_init_embedding_model,
)
from lasersb.models.resnet import SpeakerEmbeddingModel

TINY = {"embedding_dim": 8, "n_mels": 16, "base_channels": 4, "num_blocks": (1, 1, 1, 1)}


def _trunk_state(model):
    """Parameters and buffers of everything but the last affine layers and the head."""
    last = {
        id(t) for m in model.last_affine_modules() for t in m.state_dict(keep_vars=True).values()
    }
    return {
        k: v.detach().clone()
        for k, v in model.state_dict(keep_vars=True).items()
        if id(v) not in last and v.dtype.is_floating_point
    }


def _last_state(model):
    return [p.detach().clone() for p in model.last_affine_parameters()]


@pytest.fixture()
def tiny_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["ID,duration,wav,label"]
    for i in range(6):
        seconds = 0.4 + 0.1 * i
        wav = tmp_path / f"u{i}.wav"
        soundfile.write(wav, rng.normal(0, 0.1, int(16000 * seconds)).astype("float32"), 16000)
        lines.append(f"u{i},{seconds},{wav},{'ab'[i % 2]}")
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


class _SnapshotBrain(EmbeddingClassifierBrain):
    """Records the model state at the end of every training epoch."""

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            model = self.modules.model
            self.snapshots.append((self.stage_name, _trunk_state(model), _last_state(model)))
        super().on_stage_end(stage, stage_loss, epoch)


def _brain(schedule, stage1=1, stage2=1):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EmbeddingClassifier(load_or_init_embedding_model(**TINY), num_classes=2)
    hparams = {
        "seed": 0,
        "classes": ["a", "b"],
        "schedule": schedule,
        "stage1_epochs": stage1,
        "stage2_epochs": stage2,
        "lr": 0.01,
        "stage2_lr": 0.005,
        "single_stage_lr": 0.005,
        "warmup_fraction": 0.0,
        "min_lr_ratio": 0.5,
        "epoch_counter": EpochCounter(stage1 + stage2),
        "chunk_seconds": 0.3,
        "eval_chunk_seconds": 0.3,
        "sample_rate": 16000,
        "label_smoothing": 0.0,
        "augment": None,
        "train_logger": None,
        "num_checkpoints_to_keep": 1,
    }
    brain = _SnapshotBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.Adam(params, lr=0.01),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.snapshots = []
    return brain, model


def test_two_stage_freezes_then_trains_everything(tiny_csv):
    brain, model = _brain("two_stage")
    trunk0, last0 = _trunk_state(model), _last_state(model)
    data = classification_dataset(tiny_csv, ["a", "b"])
    brain.fit(brain.hparams.epoch_counter, data, train_loader_kwargs={"batch_size": 3})
    (name1, trunk1, last1), (name2, trunk2, last2) = brain.snapshots
    assert (name1, name2) == ("stage1", "stage2")
    # Stage 1: the trunk (weights AND batch-norm statistics) is untouched, the last affine
    # layers (embedding layer + head) moved.
    assert all(torch.equal(trunk0[k], trunk1[k]) for k in trunk0)
    assert all(not torch.equal(a, b) for a, b in zip(last0, last1))
    # Stage 2: the whole network moves.
    moved = [k for k in trunk1 if not torch.equal(trunk1[k], trunk2[k])]
    assert any(k.startswith("embedding_model.encoder.in_conv") for k in moved)
    assert any("running_mean" in k for k in moved)
    assert all(not torch.equal(a, b) for a, b in zip(last1, last2))
    # Learning rates: stage-2 peak for both groups in stage 2 (cosine to half of it).
    lrs = [g["lr"] for g in brain.optimizer.param_groups]
    assert 0.0025 <= lrs[0] == lrs[1] <= 0.005
    report = brain.evaluate(data, test_loader_kwargs={"batch_size": 4})
    assert report["num_utterances"] == 6
    assert sorted(brain.test_predictions["ids"]) == [f"u{i}" for i in range(6)]
    assert np.allclose(np.sum(brain.test_predictions["probs"], axis=1), 1.0, atol=1e-5)


def test_single_stage_trains_everything_from_the_start(tiny_csv):
    brain, model = _brain("single_stage", stage1=1, stage2=0)
    trunk0 = _trunk_state(model)
    data = classification_dataset(tiny_csv, ["a", "b"])
    brain.fit(brain.hparams.epoch_counter, data, train_loader_kwargs={"batch_size": 3})
    ((name, trunk1, _),) = brain.snapshots
    assert name == "single"
    assert any(not torch.equal(trunk0[k], trunk1[k]) for k in trunk0 if "conv" in k)


def test_schedule_configuration_errors():
    model = EmbeddingClassifier(load_or_init_embedding_model(**TINY), num_classes=2)
    base = {"classes": ["a", "b"], "stage1_epochs": 1, "stage2_epochs": 2}
    for hparams, message in (
        ({**base, "schedule": "three_stage", "epoch_counter": EpochCounter(3)}, "schedule"),
        ({**base, "schedule": "two_stage", "epoch_counter": EpochCounter(2)}, "stage1_epochs"),
    ):
        with pytest.raises(ValueError, match=message):
            EmbeddingClassifierBrain(
                modules={"model": model}, hparams=hparams, run_opts={"device": "cpu"}
            )
    with pytest.raises(ValueError, match="trainable part"):
        model.set_trainable("head")


def test_chunk_posteriors_match_per_chunk_average():
    torch.manual_seed(0)
    model = EmbeddingClassifier(load_or_init_embedding_model(**TINY), num_classes=3).eval()
    wavs = torch.randn(2, 16000)
    lens = torch.tensor([1.0, 0.35])  # 16000 and 5600 samples
    chunk = 4000
    with torch.no_grad():
        probs = chunk_posteriors(model, wavs, lens, chunk, max_chunks_per_pass=3)
        # Utterance 0: 4 aligned chunks; utterance 1: 0-4000 and the last 4000 (1600-5600).
        first = model(wavs[0].view(4, chunk), torch.ones(4)).softmax(-1).mean(0)
        pieces = torch.stack([wavs[1, :chunk], wavs[1, 1600:5600]])
        second = model(pieces, torch.ones(2)).softmax(-1).mean(0)
        short = chunk_posteriors(model, wavs[:1, :3000], torch.ones(1), chunk)
        alone = model(wavs[:1, :3000], torch.ones(1)).softmax(-1)
    assert torch.allclose(probs[0], first, atol=1e-5)
    assert torch.allclose(probs[1], second, atol=1e-5)
    # A short utterance is one zero-padded chunk with its true length (front-end edge effects).
    assert torch.allclose(short, alone, atol=1e-3)


def test_checkpoint_is_loaded_with_its_own_config(tmp_path):
    saved = SpeakerEmbeddingModel(**TINY)
    save_embedding_model(saved, tmp_path, {"source": "xvector"})
    loaded = load_or_init_embedding_model(tmp_path, embedding_dim=256)  # config ignored
    assert loaded.checkpoint_meta["source"] == "xvector"
    assert loaded.embedding_dim == 8 and loaded.training
    for (name, a), b in zip(saved.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="embedding_model.ckpt"):
        load_or_init_embedding_model(tmp_path / "missing")


def test_label_errors(tiny_csv):
    with pytest.raises(ValueError, match="no 'emotion' column"):
        classification_dataset(tiny_csv, ["a", "b"], label_column="emotion")
    data = classification_dataset(tiny_csv, ["a"])
    with pytest.raises(ValueError, match="not one of the classes"):
        data[1]
