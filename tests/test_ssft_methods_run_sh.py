"""``recipes/LibriSpeech/ssft/run.sh --mini --methods "laser score spin"``: one comparison table.

One slow test (a few SSFT and SUPERB steps per method on the mini corpus, tiny HuBERT): every
method trains, exports and is evaluated by the same SUPERB PR, ASR and QbE stages (the default
``--tasks "pr asr qbe"``), and the report prints the four rows original / SCORE / Spin / LASER
with PER, WER and QbE MTWV, the relative change and the fine-tuning time. A second call finds
every stage done.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_sh_mini_three_methods(mini_corpus, tmp_path):
    env = dict(os.environ, LASERSB_MINI_ROOT=str(mini_corpus), PYTHONPATH=str(REPO))
    exp = tmp_path / "exp"
    cmd = [
        "bash", "recipes/LibriSpeech/ssft/run.sh", "--mini", "--exp", str(exp),
        "--methods", "laser score spin",
        "--superb_args", "--optimizer_step_limit=2 --train_max_utterances=8 --number_of_epochs=1",
        "--", "--total_steps=3", "--warmup_steps=1", "--valid_max_utterances=4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
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
