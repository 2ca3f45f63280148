"""The IEMOCAP and ADReSS transfer recipes on the mini corpus, both schedules, from checkpoints.

The embedding checkpoints are written in the DINO/x-vector recipes' format
(:func:`lasersb.models.dino.save_embedding_model`) at the mini size, so the recipes exercise the
"start from a pre-trained DINO / x-vector model" path. Most runs are tiny (1 + 1 epochs): they
check the pipeline, the outputs and the cross-validation bookkeeping; ``test_recipe_learns_its_
mini_task`` trains each recipe longer (4 + 4 epochs) and checks that it learns (training loss
clearly below chance, the bound taken from several seeds).
"""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SER = REPO / "recipes" / "IEMOCAP" / "ser"
AD = REPO / "recipes" / "ADReSS" / "ad"


def _load(recipe, name):
    spec = importlib.util.spec_from_file_location(name, recipe / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from lasersb.models.dino import save_embedding_model
    from lasersb.models.resnet import SpeakerEmbeddingModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embedding_checkpoints")
    paths = {}
    for seed, source in enumerate(("dino-teacher", "xvector")):
        torch.manual_seed(seed)
        model = SpeakerEmbeddingModel(
            embedding_dim=32, n_mels=24, base_channels=4, num_blocks=(1, 1, 1, 1)
        )
        paths[source] = save_embedding_model(model, root / source, {"source": source})
    return paths


def _common(out, checkpoint):
    return [
        f"--output_folder={out}",
        f"--embedding_checkpoint={checkpoint}",
        "--device=cpu",
        "--noprogressbar",
    ]


@pytest.fixture(scope="module")
def ser_runs(mini_corpus, checkpoints, tmp_path_factory):
    recipe = _load(SER, "iemocap_ser_train")
    hparams = str(SER / "hparams" / "ser_mini.yaml")
    data = [f"--data_folder={mini_corpus / 'IEMOCAP'}", f"--noise_folder={mini_corpus / 'DEMAND'}"]
    two = tmp_path_factory.mktemp("ser_two_stage")
    one = tmp_path_factory.mktemp("ser_single_stage")
    args = [hparams, *data, *_common(two, checkpoints["dino-teacher"]), "--reverb_prob=0.0"]
    runs = {"fold1": recipe.main([*args, "--fold=1"])}
    runs["fold2"] = recipe.main([*args, "--fold=2", "--noise_prob=0.0"])
    runs["single"] = recipe.main(
        [
            hparams,
            *data,
            *_common(one, checkpoints["xvector"]),
            "--fold=3",
            "--schedule=single_stage",
            "--eval_chunk_seconds=1.0",
            "--noise_prob=0.0",
            "--reverb_prob=0.0",
        ]
    )
    return {"recipe": recipe, "two": two, "one": one, "runs": runs, "args": args}


def test_ser_folds_and_aggregate(ser_runs):
    two = ser_runs["two"]
    aggregated = ser_runs["runs"]["fold2"]
    assert sorted(aggregated["folds"]) == ["1", "2"] and not aggregated["complete"]
    folds = [json.loads((two / f"fold{k}" / "results.json").read_text()) for k in (1, 2)]
    for k, fold in zip((1, 2), folds):
        assert fold["test_session"] == k and fold["schedule"] == "two_stage"
        assert fold["embedding_source"] == "dino-teacher"
        report = fold["report"]
        assert report["classes"] == ["neu", "hap", "ang", "sad"]
        assert report["num_utterances"] == 8  # the held-out session only
        assert 0.0 <= fold["ua"] <= 1.0 and 0.0 <= fold["wa"] <= 1.0
        with open(two / f"fold{k}" / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 8 and all(r["ID"].startswith(f"Ses0{k}") for r in rows)
        # The two stages ran in order.
        log = (two / f"fold{k}" / "train_log.txt").read_text()
        assert "epoch: 1, stage: stage1" in log and "epoch: 2, stage: stage2" in log
    ua = [f["ua"] for f in folds]
    assert aggregated["ua_mean"] == pytest.approx(sum(ua) / 2)
    table = (two / "results.md").read_text()
    assert "| Session 1 |" in table and "| Session 2 |" in table and "mean ± std" in table
    # A finished fold is not trained again; aggregation alone rebuilds the same summary.
    recipe = ser_runs["recipe"]
    again = recipe.main([*ser_runs["args"], "--fold=1", "--aggregate_only=True"])
    assert again["summary"] == aggregated["summary"]
    stamp = (two / "fold1" / "results.json").stat().st_mtime_ns
    recipe.main([*ser_runs["args"], "--fold=1"])
    assert (two / "fold1" / "results.json").stat().st_mtime_ns == stamp


def test_ser_single_stage(ser_runs):
    result = ser_runs["runs"]["single"]
    fold = result["folds"]["3"]
    assert fold["schedule"] == "single_stage" and fold["embedding_source"] == "xvector"
    assert fold["eval_chunk_seconds"] == 1.0
    log = (ser_runs["one"] / "fold3" / "train_log.txt").read_text()
    assert "stage: single" in log and "stage1" not in log


@pytest.mark.parametrize("schedule", ["two_stage", "single_stage"])
def test_adress_recipe(schedule, mini_corpus, checkpoints, tmp_path):
    recipe = _load(AD, "adress_ad_train")
    source = "dino-teacher" if schedule == "two_stage" else "xvector"
    results = recipe.main(
        [
            str(AD / "hparams" / "ad_mini.yaml"),
            f"--data_folder={mini_corpus / 'ADReSS'}",
            *_common(tmp_path, checkpoints[source]),
            f"--schedule={schedule}",
        ]
    )
    assert results["num_test_subjects"] == 8
    assert results["schedule"] == schedule and results["embedding_source"] == source
    for key in ("accuracy", "f1", "precision", "recall", "ua", "macro_f1"):
        assert 0.0 <= results[key] <= 1.0
    assert results["report"]["classes"] == ["cc", "cd"]
    assert results["report"]["per_class"]["cd"]["support"] == 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["accuracy"] == results["accuracy"]
    assert (tmp_path / "results.md").read_text().count("|") > 10
    with open(tmp_path / "predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 8


def _last_train_loss(train_log: Path) -> float:
    """The last epoch's ``train loss`` of a SpeechBrain train_log.txt (as a user reads it)."""
    lines = [ln for ln in train_log.read_text().splitlines() if "train loss:" in ln]
    return float(lines[-1].split("train loss:")[1].split()[0])


# Each recipe learns its mini task from a random initialisation (single stage, 4 + 4 epochs;
# IEMOCAP with a single-stage lr of 0.005): its last training loss falls clearly below chance
# (the cross-entropy of a uniform guess, ln C). Measured (2026-12-05, these settings):
# ADReSS seeds 0, 1, 2: 0.380, 0.493, 0.484 (chance ln 2 = 0.693); IEMOCAP fold 1, seeds 0, 1, 2
# and the file's 1986: 0.869, 0.724, 0.944, 1.03 (chance ln 4 = 1.386; at the mini file's lr
# 0.001 it stays near chance, 1.09-1.33). The bounds sit about halfway between the worst seed
# and chance. (The 8 mini test utterances stay at chance: too few to generalise from.)
LEARNING = {
    "adress": (AD, "ad_mini.yaml", "ADReSS", 2, 0.60, []),
    "iemocap": (SER, "ser_mini.yaml", "IEMOCAP", 4, 1.21, ["--single_stage_lr=0.005"]),
}


@pytest.mark.parametrize("name", sorted(LEARNING))
def test_recipe_learns_its_mini_task(name, mini_corpus, tmp_path):
    import math

    recipe_dir, hparams, corpus, classes, bound, extra = LEARNING[name]
    recipe = _load(recipe_dir, f"{name}_learning")
    argv = [
        str(recipe_dir / "hparams" / hparams),
        f"--data_folder={mini_corpus / corpus}",
        "--embedding_checkpoint=null",
        f"--output_folder={tmp_path}",
        "--schedule=single_stage",
        "--stage1_epochs=4",
        "--stage2_epochs=4",
        "--device=cpu",
        "--noprogressbar",
        *extra,
    ]
    if name == "iemocap":
        argv += [f"--noise_folder={mini_corpus / 'DEMAND'}", "--fold=1"]
        argv += ["--noise_prob=0.0", "--reverb_prob=0.0"]
    results = recipe.main(argv)
    log = tmp_path / ("fold1" if name == "iemocap" else "") / "train_log.txt"
    chance = math.log(classes)
    classes_seen = results["folds"]["1"]["report"] if name == "iemocap" else results["report"]
    assert len(classes_seen["classes"]) == classes
    assert _last_train_loss(log) <= bound < chance
