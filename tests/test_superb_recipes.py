"""End-to-end SUPERB ASR and PR recipes on the mini corpus with a tiny random upstream.

Each recipe prepares the mini LibriSpeech, trains its CTC head on the frozen upstream (the
mini hparams overfit a few training utterances), evaluates, and writes ``results.json``; the
report command then renders the table of both runs. The tiny random upstream does not
generalise, so only the training-set error rate is asserted (chance is ~100 %: an empty or
random output), with the margin measured when the mini hparams were tuned (PR ~40 %, ASR ~35 %).
"""

import json
import runpy
from pathlib import Path

import pytest
import torch

from lasersb.report import main as report_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def single_thread():
    """Recipes on tiny models run fastest with one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_recipe(task, mini_corpus, upstream, out, *extra):
    script = ROOT / "recipes" / "SUPERB" / task / "train.py"
    hparams = ROOT / "recipes" / "SUPERB" / task / "hparams" / f"{task}_mini.yaml"
    argv = [
        str(hparams),
        f"--data_folder={mini_corpus / 'LibriSpeech'}",
        f"--lexicon_file={mini_corpus / 'librispeech-lexicon.txt'}",
        f"--upstream_source={upstream}",
        f"--output_folder={out}",
        "--noprogressbar",
        *extra,
    ]
    return runpy.run_path(str(script))["main"](argv)


@pytest.fixture(scope="module")
def recipe_runs(mini_corpus, tiny_upstreams, tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("superb")
    upstream = tiny_upstreams["hubert"]
    return {
        task: (_run_recipe(task, mini_corpus, upstream, out / task), out / task)
        for task in ("pr", "asr")
    }


@pytest.mark.slow
@pytest.mark.parametrize("task, metric, limit", [("pr", "PER", 60.0), ("asr", "WER", 70.0)])
def test_recipe_learns_and_writes_results(recipe_runs, task, metric, limit):
    results, out = recipe_runs[task]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["task"] == task and on_disk["metric"] == metric
    assert set(on_disk) >= {"dev-clean", "test-clean", "train"}
    train = on_disk["train"]
    assert train["error_rate"] < limit, train
    assert train["error_rate"] < on_disk["test-clean"]["error_rate"]
    assert train["num_edits"] == train["insertions"] + train["deletions"] + train["substitutions"]
    assert results["train"] == on_disk["train"]
    # The layer weights stay a distribution and moved away from uniform (they got gradients).
    weights = torch.tensor(on_disk["layer_weights"])
    assert abs(float(weights.sum()) - 1.0) < 1e-4 and bool((weights > 0).all())
    assert float(weights.max() - weights.min()) > 1e-3
    # Per-utterance hypotheses and JSON summaries, one line per utterance.
    for split in ("dev-clean", "test-clean", "train"):
        hyps = (out / "eval" / f"hyp_{split}.txt").read_text().splitlines()
        assert len(hyps) == on_disk[split]["num_utterances"]
        summary = json.loads((out / "eval" / f"{metric.lower()}_{split}.json").read_text())
        assert summary["error_rate"] == pytest.approx(on_disk[split]["error_rate"])
    # The frozen upstream's hidden states were cached once per utterance.
    assert any((out / "feature_cache").rglob("*.pt"))


@pytest.mark.slow
def test_evaluation_only_run_reproduces_results(recipe_runs, mini_corpus, tiny_upstreams):
    results, out = recipe_runs["pr"]
    again = _run_recipe("pr", mini_corpus, tiny_upstreams["hubert"], out, "--test_only")
    for split in ("dev-clean", "test-clean", "train"):
        assert again[split] == results[split]


@pytest.mark.slow
def test_report_renders_both_runs(recipe_runs, capsys):
    folders = [str(recipe_runs["pr"][1]), str(recipe_runs["asr"][1])]
    assert report_main([*folders, "--names", "tiny", "tiny", "--baseline", "tiny"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| Upstream | PR PER test-clean (%) | rel. to tiny | ASR WER")
    rows = [line for line in table if line.startswith("|")]
    assert rows[2].startswith("| tiny | ") and len(rows) == 3
    assert table[-1].startswith("- Environment: commit ")  # the footnote of #23
