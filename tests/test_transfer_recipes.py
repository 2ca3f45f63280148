"""The IEMOCAP and ADReSS transfer recipes on the mini corpus, both schedules, from checkpoints.

The embedding checkpoints are written in the DINO/x-vector recipes' format
(:func:`lasersb.models.dino.save_embedding_model`) at the mini size, so the recipes exercise the
"start from a pre-trained DINO / x-vector model" path. The runs are tiny (1 + 1 epochs): they
check the pipeline, the outputs and the cross-validation bookkeeping, not the accuracies.
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
