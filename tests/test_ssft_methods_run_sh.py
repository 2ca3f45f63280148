"""``recipes/LibriSpeech/ssft/run.sh --mini --methods "laser score spin"``: one comparison table.

One slow test (a few SSFT and SUPERB steps per method on the mini corpus, tiny HuBERT): every
method trains, exports and is evaluated by the same SUPERB PR, ASR and QbE stages (the default
``--tasks "pr asr qbe"``), and the report prints the four rows original / SCORE / Spin / LASER
with PER, WER and QbE MTWV, the relative change and the fine-tuning time. A second call finds
every stage done. A second test runs the SUPERB protocol (``--lr_grid "1e-3 1e-2" --seeds "1 2"``)
on a copy of the first run's fine-tuned upstreams.
"""

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from lasersb.metrics.bootstrap import aligned_edits, paired_bootstrap_change, read_utterance_errors

REPO = Path(__file__).resolve().parents[1]


def _env(mini_corpus):
    return dict(os.environ, LASERSB_MINI_ROOT=str(mini_corpus), PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def three_methods(mini_corpus, tmp_path_factory):
    """The three-method run: its command, output folder and process (shared set-up)."""
    exp = tmp_path_factory.mktemp("three_methods") / "exp"
    cmd = [
        "bash", "recipes/LibriSpeech/ssft/run.sh", "--mini", "--exp", str(exp),
        "--methods", "laser score spin",
        "--superb_args", "--optimizer_step_limit=2 --train_max_utterances=8 --number_of_epochs=1",
        "--", "--total_steps=3", "--warmup_steps=1", "--valid_max_utterances=4",
    ]  # fmt: skip
    env = _env(mini_corpus)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cmd, exp, env


@pytest.mark.slow
def test_run_sh_mini_three_methods(three_methods):
    cmd, exp, env = three_methods
    lines = (exp / "results.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:3] == ["Upstream", "PR PER test-clean (%)", "rel. to original"]
    assert header[3:7] == [
        "ASR WER test-clean (%)",
        "rel. to original",
        "QbE MTWV eval",
        "rel. to original",
    ]
    assert header[-1] == "fine-tuning time"
    rows = [[cell.strip() for cell in row.strip("|").split("|")] for row in table[2:]]
    assert [row[0] for row in rows] == ["original", "SCORE", "Spin", "LASER"]
    for row, name in zip(rows, ["original", "score", "spin", "laser"]):
        # The MTWV cell is the eval MTWV of that upstream's QbE run (last layer, the default).
        summary = json.loads((exp / "qbe" / name / "layer_-1" / "qbe_summary.json").read_text())
        assert summary["eval"]["layer"] == -1 and summary["eval"]["queries"] == 6
        assert row[5] == f"{summary['eval']['mtwv']:.4f}", (row, summary["eval"])
        base = json.loads((exp / "qbe" / "original" / "layer_-1" / "qbe_summary.json").read_text())
        if name == "original" or base["eval"]["mtwv"] == 0:
            assert row[6] == "-", row  # no change relative to itself, or to an MTWV of 0
        else:
            change = (summary["eval"]["mtwv"] - base["eval"]["mtwv"]) / base["eval"]["mtwv"]
            assert row[6] == f"{100 * change:+.1f} %", row
    for row in rows[1:]:
        assert row[-1].endswith("h (CPU wall)"), row
    assert any("layer -1 (the last) of every upstream" in line for line in lines)
    assert lines[-1].startswith("- Environment: commit "), lines[-1]  # every row's alike
    for folder, method in (("ssft", "LASER"), ("ssft_score", "SCORE"), ("ssft_spin", "Spin")):
        summary = json.loads((exp / folder / "ssft_summary.json").read_text())
        assert summary["method"] == f"{method} SSFT" and summary["optimizer_steps"] == 3
        assert (exp / folder / "upstream_hf" / "config.json").is_file()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # 3 SSFT runs + 4 upstreams x (PR, ASR, QbE)
    assert (again.stdout + again.stderr).count("already done") == 15


def _cells(line):
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_run_sh_mini_lr_grid_and_seeds(three_methods, tmp_path):
    """``run.sh --mini --lr_grid "1e-3 1e-2" --seeds "1 2"`` on a copy of the three-method run's
    folder, from stage 3 (its data, SSFT and export are done; QbE is found done): per upstream, a
    rate searched on dev-clean, two seeded PR heads; the table prints the chosen rate, mean ± std
    (n=2), the paired bootstrap interval (recomputed here from the per-utterance files) and the
    environment."""
    _, shared, env = three_methods
    exp = tmp_path / "exp"
    shutil.copytree(shared, exp, ignore=shutil.ignore_patterns("pr", "asr", "feature_cache"))
    cmd = [
        "bash", "recipes/LibriSpeech/ssft/run.sh", "--mini", "--lr_grid", "1e-3 1e-2",
        "--seeds", "1 2", "--exp", str(exp), "--tasks", "pr qbe", "--stage", "3",
        "--superb_args", "--optimizer_step_limit=4 --train_max_utterances=8 --number_of_epochs=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (exp / "results.md").read_text()
    assert text.strip() in proc.stdout  # printed as written
    lines = text.splitlines()
    assert _cells(lines[0]) == [
        "Upstream", "PR PER test-clean (%)", "rel. to original", "95 % CI", "PR lr",
        "QbE MTWV eval", "rel. to original", "95 % CI", "fine-tuning time",
    ]  # fmt: skip
    rows = {cells[0]: cells for cells in map(_cells, lines[2:4])}
    assert list(rows) == ["original", "LASER"]
    per_seed = {}
    for name in ("original", "laser"):
        sweep = json.loads((exp / "pr" / name / "sweep.json").read_text())
        grid = {p["lr"]: p["dev_error_rate"] for p in sweep["lr_search"]["grid"]}
        assert sweep["lr"] == min(grid, key=grid.get) and set(grid) == {1e-3, 1e-2}
        runs = [exp / "pr" / name / f"seed_{seed}" for seed in (1, 2)]
        results = [json.loads((run / "results.json").read_text()) for run in runs]
        rates = [r["test-clean"]["error_rate"] for r in results]
        row = rows["original" if name == "original" else "LASER"]
        assert row[1] == f"{statistics.fmean(rates):.2f} ± {statistics.stdev(rates):.2f} (n=2)"
        assert row[4] == f"{sweep['lr']:.0e}"
        per_seed[name] = [
            read_utterance_errors(run / r["test-clean"]["utterance_errors"])
            for run, r in zip(runs, results)
        ]
        assert f"PR {row[0]}: lr {sweep['lr']:.0e} chosen on dev-clean PER from" in text
    interval = paired_bootstrap_change(
        *aligned_edits(per_seed["original"], per_seed["laser"]), n_resamples=9999, rng=0
    )
    expected = f"[{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}] %"
    assert rows["LASER"][3] == expected + (" n.s." if interval["contains_zero"] else "")
    assert rows["LASER"][2] == f"{100 * interval['change']:+.1f} %"
    assert rows["original"][2:4] == ["-", "-"]
    assert "- Seeds of the heads: 1, 2" in text
    assert lines[-1].startswith("- Environment: commit "), lines[-1]
    assert "torch " in lines[-1] and "speechbrain " in lines[-1]


def test_run_sh_real_data_without_quesst_skips_qbe(mini_corpus, tmp_path):
    """On real data without ``--quesst_folder`` the QbE stage says why it is skipped (no error);
    ``--tasks qbe`` alone then leaves nothing for the table. Stages 5-6 only: no training."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [
        "bash", "recipes/LibriSpeech/ssft/run.sh",
        "--data_folder", str(mini_corpus / "LibriSpeech"),
        "--upstream", str(tmp_path / "unused"), "--exp", str(tmp_path / "exp"), "--stage", "5",
    ]  # fmt: skip
    proc = subprocess.run(
        [*cmd, "--tasks", "qbe"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Stage 5: QbE skipped: no --quesst_folder given" in proc.stdout
    assert "Stage 6: no results table: no task left" in proc.stdout
    assert not (tmp_path / "exp" / "qbe").exists()
    bad = subprocess.run(
        [*cmd, "--tasks", "pr sd"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "--tasks takes pr, asr and/or qbe" in bad.stderr
