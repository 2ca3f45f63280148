"""``recipes/LibriSpeech/ssft/run.sh --mini --methods "laser score spin"``: one comparison table.

One slow test (a few SSFT and SUPERB steps per method on the mini corpus, tiny HuBERT): every
method trains, exports and is evaluated by the same SUPERB PR and ASR stages, and the report
prints the four rows original / SCORE / Spin / LASER with the relative change and the
fine-tuning time. A second call finds every stage done.
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
    table = (exp / "results.md").read_text().splitlines()
    assert "rel. to original" in table[0] and "fine-tuning time" in table[0]
    assert [row.split("|")[1].strip() for row in table[2:]] == [
        "original",
        "SCORE",
        "Spin",
        "LASER",
    ]
    for row in table[3:]:
        assert row.rstrip(" |").endswith("h (CPU wall)"), row
    for folder, method in (("ssft", "LASER"), ("ssft_score", "SCORE"), ("ssft_spin", "Spin")):
        summary = json.loads((exp / folder / "ssft_summary.json").read_text())
        assert summary["method"] == f"{method} SSFT" and summary["optimizer_steps"] == 3
        assert (exp / folder / "upstream_hf" / "config.json").is_file()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # 3 SSFT runs + 4 upstreams x (PR, ASR)
    assert (again.stdout + again.stderr).count("already done") == 11
