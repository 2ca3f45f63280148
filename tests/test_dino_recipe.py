"""DINO recipe on the mini corpus: a few steps without collapse, teacher embeddings, scoring.

One short run of ``recipes/VoxCeleb/dino/train.py`` with ``dino_mini.yaml`` (one epoch, six
optimiser steps) is shared by the checks: the teacher output stays away from both collapses
(entropy strictly between 0 and log K, batch-mean distribution far from one-hot), the teacher
follows the student by EMA, the exported teacher trunk gives different embeddings for
different speakers, the verification outputs are written, the scoring CLI reproduces them from
the checkpoint, and a re-run resumes from the checkpoint instead of training again.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "dino"
MINI_HPARAMS = RECIPE / "hparams" / "dino_mini.yaml"


def _load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dino_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(mini_corpus, out, *extra):
    return [
        str(MINI_HPARAMS),
        f"--data_folder={mini_corpus / 'VoxCeleb1'}",
        f"--noise_folder={mini_corpus / 'DEMAND'}",
        f"--output_folder={out}",
        "--number_of_epochs=1",
        "--device=cpu",
        "--noprogressbar",
        *extra,
    ]


@pytest.fixture(scope="module")
def dino_run(mini_corpus, tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("dino_mini")
    recipe = _load_recipe()
    brain = recipe.main(_argv(mini_corpus, out))
    return {"brain": brain, "out": out, "recipe": recipe}


def test_dino_trains_without_collapse(dino_run):
    brain = dino_run["brain"]
    log_k = math.log(brain.hparams.dino_loss.out_dim)
    # 48 training utterances of the mini corpus in batches of 8: six optimiser steps.
    assert brain.optimizer_step == brain.total_steps == 6
    stats = brain.last_collapse  # last training batch
    for value in (stats["entropy"], brain.train_stats["teacher_entropy"]):
        # Neither one-hot (entropy 0) nor uniform (entropy log K) teacher outputs.
        assert 0.05 * log_k < value < 0.95 * log_k
    # The batch-mean teacher distribution is not concentrated on one prototype.
    assert stats["kl_uniform"] < 0.9 * log_k
    assert math.isfinite(brain.train_stats["loss"]) and brain.train_stats["loss"] > 0
    # hyperion's energy VAD ran at preparation: the dataset serves the speech segments.
    import csv

    with open(dino_run["out"] / "manifests" / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and brain.hparams.energy_vad
    speech = [float(r["speech_duration"]) for r in rows]
    assert all(0.5 <= s <= float(r["duration"]) for s, r in zip(speech, rows))
    assert sum(speech) < sum(float(r["duration"]) for r in rows)
    # The teacher moved towards the student, but is not a copy of it.
    student = dict(brain.modules.student.named_parameters())
    diffs = [
        float((p - student[n]).detach().abs().max()) for n, p in brain.teacher.named_parameters()
    ]
    assert max(diffs) > 0


def test_teacher_embeddings_separate_speakers(dino_run, mini_corpus):
    from lasersb.data.audio import read_audio
    from lasersb.models.dino import load_embedding_model

    out = dino_run["out"]
    model = load_embedding_model(out)
    assert model.checkpoint_meta["source"] == "dino-teacher"
    assert model.checkpoint_meta["optimizer_step"] == 6
    assert model.config["embedding_dim"] == 256
    wav_root = mini_corpus / "VoxCeleb1" / "wav"
    speakers = sorted(p.name for p in wav_root.iterdir())
    wavs = [read_audio(next(iter(sorted((wav_root / s).rglob("*.wav"))))) for s in speakers]
    longest = max(w.numel() for w in wavs)
    batch = torch.stack([torch.nn.functional.pad(w, (0, longest - w.numel())) for w in wavs])
    lens = torch.tensor([w.numel() / longest for w in wavs])
    with torch.no_grad():
        emb = model(batch, lens)
    assert emb.shape == (len(speakers), 256) and bool(torch.isfinite(emb).all())
    emb = torch.nn.functional.normalize(emb, dim=-1)
    cos = emb @ emb.T
    off_diagonal = cos[~torch.eye(len(speakers), dtype=torch.bool)]
    assert float(off_diagonal.max()) < 0.999
    # The teacher's trunk in the brain gives the same embeddings as the exported one.
    with torch.no_grad():
        again = dino_run["brain"].embedding_model()(batch, lens)
    torch.testing.assert_close(torch.nn.functional.normalize(again, dim=-1), emb)


def test_verification_outputs_and_scoring_cli(dino_run, mini_corpus, tmp_path):
    from lasersb.metrics.trial_scoring import main as score_main

    eval_dir = dino_run["out"] / "eval" / "veri_test2"
    results = json.loads((eval_dir / "results.json").read_text())
    assert set(results) == {"cosine", "cosine+mean", "cosine+mean+asnorm"}
    n_trials = len((mini_corpus / "VoxCeleb1" / "veri_test2.txt").read_text().split("\n")) - 1
    for metrics in results.values():
        assert 0.0 <= metrics["EER"] <= 100.0
        assert 0.0 <= metrics["minDCF@0.01"] <= 1.0 + 1e-9
        assert metrics["trials"] == n_trials
    assert (eval_dir / "det.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cosine |" in (eval_dir / "results.md").read_text()
    lines = (eval_dir / "scores_cosine.txt").read_text().splitlines()
    assert len(lines) == n_trials and lines[0].split()[-1] in ("target", "nontarget")
    # The stand-alone scoring stage reproduces the plain cosine results from the checkpoint.
    score_main(
        [
            "--model",
            str(dino_run["out"] / "embedding_model.ckpt"),
            "--trials",
            str(mini_corpus / "VoxCeleb1" / "veri_test2.txt"),
            "--wav-folder",
            str(mini_corpus / "VoxCeleb1" / "wav"),
            "--output",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["cosine"]["EER"] == pytest.approx(results["cosine"]["EER"], abs=1e-6)


def _same_content(a, b) -> bool:
    """Equal nested checkpoint contents (tensors bit-identical)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same_content(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_content, a, b))
    return a == b


def test_rerun_resumes_instead_of_training(dino_run, mini_corpus):
    out = dino_run["out"]
    exported = torch.load(out / "embedding_model.ckpt", weights_only=True)
    saved = {p.relative_to(out): p.read_bytes() for p in (out / "save").rglob("*") if p.is_file()}
    brain = dino_run["recipe"].main(_argv(mini_corpus, out, "--score_after_training=False"))
    assert brain.optimizer_step == 6  # recovered, no new step
    teacher = dict(dino_run["brain"].teacher.named_parameters())
    for name, param in brain.teacher.named_parameters():
        assert torch.equal(param, teacher[name]), name
    # What the re-run left: the exported embedding model holds the same weights, and the
    # checkpoints are byte for byte the ones the first run wrote (none added, none rewritten).
    again = torch.load(out / "embedding_model.ckpt", weights_only=True)
    assert exported and _same_content(again, exported)
    after = {p.relative_to(out): p.read_bytes() for p in (out / "save").rglob("*") if p.is_file()}
    assert after.keys() == saved.keys()
    assert all(after[name] == content for name, content in saved.items())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
