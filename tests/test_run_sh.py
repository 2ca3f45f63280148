"""The shared run.sh library (``recipes/common.sh``) and every recipe's ``run.sh`` as users call it.

* ``common.sh``'s option parser and ``log`` on a throw-away script (bash only, milliseconds).
* Every ``run.sh`` sources ``common.sh`` (directly, or by ``exec`` of a shared script that
  does) and has no option loop or ``log()`` of its own; ``--help`` prints its header and its
  options; an unknown option stops with exit status 2 naming the valid ones.
* The run.sh files no other test runs, end to end on the mini corpus (``--mini``), the way the
  READMEs say: TEMPLATE, SUPERB PR, VoxCeleb x-vector (its stages 1 and 3 through train.py's
  ``prepare_only`` / ``score_only``, scored as ``score_after_training`` scores), ADReSS, IEMOCAP
  (one fold, one schedule). Not here (minutes on 2 cores): SE and adapters (their train.py
  run through the registry).
  (LASER/SCORE/Spin: tests/test_ssft_methods_run_sh.py; QbE: tests/test_qbe_recipe.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMON = REPO / "recipes" / "common.sh"
RUN_SH = sorted((REPO / "recipes").rglob("run.sh"))
SHARED = {p for p in (REPO / "recipes").rglob("*_run.sh")}


def _bash(script: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script, "test.sh", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A run.sh-like script in recipes/<tmp>/ that sources common.sh and prints its options."""
    folder = tmp_path_factory.mktemp("toy")
    script = folder / "run.sh"
    script.write_text(
        f"""#!/usr/bin/env bash
# Toy recipe: the header --help prints.
#   bash run.sh --mini
set -euo pipefail
. "{COMMON}"
option stage 0 "first stage"
option stop_stage 2 "last stage"
flag mini "the mini corpus"
option name "" "a name (the word the parser itself must not shadow)"
option layers "-1" "layers"
parse_options "$@"
echo "stage=$stage stop=$stop_stage mini=$mini name=$name layers=$layers"
echo "extra=${{extra_args[*]:-}} count=${{#extra_args[@]}}"
for s in 0 1 2 3; do
    if [ "$stage" -le $s ] && [ "$stop_stage" -ge $s ]; then echo "run $s"; fi
done
log "hello"
d=$(mktemp -d); touch "$d/mini_corpus.json"; mini_corpus "$d"; rm -r "$d"
""",
        encoding="utf-8",
    )
    return script


def _toy(toy, *args):
    return subprocess.run(["bash", str(toy), *args], capture_output=True, text=True)


def test_parser_sets_declared_options_flags_and_extra_args(toy):
    out = _toy(
        toy,
        "--stage",
        "1",
        "--stop-stage=1",
        "--mini",
        "--name",
        "x y",
        "--layers",
        "-1",
        "--",
        "--lr=3",
        "--seed=2",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "stage=1 stop=1 mini=true name=x y layers=-1"
    assert lines[1] == "extra=--lr=3 --seed=2 count=2"
    assert [line for line in lines if line.startswith("run ")] == ["run 1"]
    source = toy.read_text().splitlines()
    hello = source.index('log "hello"') + 1
    helper = next(i for i, line in enumerate(source, 1) if line.startswith("d=$(mktemp"))
    assert re.fullmatch(rf"\S+ \(.*run\.sh:{hello}\) hello", lines[-2]), lines[-2]
    # A helper of common.sh logs the run.sh line that called it, not its own line.
    assert re.fullmatch(rf"\S+ \(.*run\.sh:{helper}\) mini corpus already at .*", lines[-1])
    defaults = _toy(toy)
    assert defaults.stdout.splitlines()[0] == "stage=0 stop=2 mini=false name= layers=-1"
    assert defaults.stdout.splitlines()[1] == "extra= count=0"
    assert _toy(toy, "--mini", "false", "--name=a=b").stdout.startswith(
        "stage=0 stop=2 mini=false name=a=b"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option --bogus; the options are: --stage --stop_stage --mini"),
        (["--stage"], "--stage needs a value"),
        (["--stage", "two"], "--stage takes an integer, got 'two'"),
        (["--mini=yes"], "--mini is a switch"),
        (["positional"], "unexpected argument 'positional'"),
    ],
)
def test_parser_rejects_bad_options_with_the_fix(toy, args, message):
    out = _toy(toy, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""  # nothing ran


def test_help_prints_the_header_and_every_option_with_its_default(toy):
    out = _toy(toy, "--stop_stage", "7", "--help")  # the defaults, not the values given
    assert out.returncode == 0
    assert out.stdout.startswith("Toy recipe: the header --help prints.\n  bash run.sh --mini\n")
    assert re.search(r"--stop_stage VALUE +last stage \[2\]", out.stdout)
    assert re.search(r"--mini +the mini corpus\n", out.stdout)
    assert "-- ARGS" in out.stdout and "stage=" not in out.stdout


def _sources_common(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    if re.search(r'^\. "\$\(dirname "\$0"\)/(\.\./)+common\.sh"', text, re.M):
        return True
    target = re.search(r'^exec bash "\$\(dirname "\$0"\)/\.\./(\w+\.sh)"', text, re.M)
    return bool(target) and _sources_common(path.parent.parent / target.group(1))


@pytest.mark.parametrize("path", RUN_SH + sorted(SHARED), ids=lambda p: str(p.relative_to(REPO)))
def test_every_run_sh_uses_the_shared_parser(path):
    text = path.read_text(encoding="utf-8")
    assert _sources_common(path), f"{path} must source recipes/common.sh (or exec one that does)"
    assert not re.search(r"^\s*log\(\)", text, re.M), f"{path} defines its own log()"
    assert "while [ $# -gt 0 ]" not in text, f"{path} has its own option loop"
    if path.name == "run.sh" and "exec bash" in text:
        return  # a task's run.sh that hands over to its shared script
    guards = re.findall(r'if \[ "\$stage" -le (\S+) \] && \[ "\$stop_stage" -ge (\S+) \]', text)
    assert guards and all(a == b for a, b in guards), f"{path}: ESPnet stage guards"


@pytest.mark.parametrize("path", RUN_SH, ids=lambda p: str(p.relative_to(REPO)))
def test_every_run_sh_help_and_unknown_option(path, tmp_path):
    header = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line[2:] if line.startswith("# ") else line[1:])
    out = subprocess.run(
        ["bash", str(path), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("\n".join(header) + "\n"), out.stdout[:300]
    assert "Options (default in brackets):" in out.stdout and "--stage VALUE" in out.stdout
    bad = subprocess.run(
        ["bash", str(path), "--mini", "--data-foldr", "x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "unknown option --data_foldr; the options are: --stage --stop_stage" in bad.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written before the options are checked


# ---------------------------------------------------------------- end to end (--mini) ---------


def _run(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run(
        ["bash", str(REPO / "recipes" / script), "--mini", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def env(mini_corpus):
    return dict(
        os.environ, LASERSB_MINI_ROOT=str(mini_corpus), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"
    )


@pytest.mark.slow
def test_template_run_sh_mini(env, tmp_path):
    exp = tmp_path / "exp"
    out = _run("TEMPLATE/run.sh", "--exp", str(exp), env=env)
    summary = json.loads((exp / "test_summary.json").read_text())
    assert summary["optimizer_steps"] > 0 and 0.0 <= summary["error_rate"] <= 1.0
    assert out.stdout.count('"error_rate"') == 1  # stage 2 shows the results once
    again = _run("TEMPLATE/run.sh", "--exp", str(exp), "--stage", "1", env=env)
    assert "Stage 1: already done" in again.stdout


@pytest.mark.slow
def test_superb_pr_run_sh_mini(env, tmp_path):
    """Stages 0-3: train (stopped before evaluating), --test_only evaluation, the report."""
    exp = tmp_path / "exp"
    out = _run("SUPERB/pr/run.sh", "--exp", str(exp), env=env)
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "pr" and results["test-clean"]["num_utterances"] > 0
    report = (exp / "report.md").read_text()
    assert f"{results['test-clean']['error_rate']:.2f}" in report
    assert out.stdout.index("Stage 1:") < out.stdout.index("Stage 2:") < out.stdout.index("Stage 3")


@pytest.mark.slow
def test_voxceleb_run_sh_mini_scores_as_train_py_does(env, tmp_path, mini_corpus):
    """Stage 1 prepares with the YAML's options (train.py finds them done), stage 3 scores the
    exported trunk with the YAML's cohort (per_speaker for the x-vector): exactly the numbers
    ``score_after_training`` gives with the trained model in memory."""
    exp = tmp_path / "exp"
    out = _run("VoxCeleb/xvector/run.sh", "--exp", str(exp), "--device", "cpu", env=env)
    assert out.stdout.count("| cosine+mean+asnorm |") == 1  # the table once
    assert "VoxCeleb manifests already prepared" in out.stdout + out.stderr  # stage 2 reused 1
    staged = json.loads((exp / "eval" / "veri_test2" / "results.json").read_text())
    # train.py as a user runs it without run.sh: resumes the finished job (no step), then scores.
    subprocess.run(
        [
            sys.executable,
            "recipes/VoxCeleb/xvector/train.py",
            "recipes/VoxCeleb/xvector/hparams/xvector_mini.yaml",
            f"--data_folder={mini_corpus}/VoxCeleb1",
            f"--noise_folder={mini_corpus}/DEMAND",
            f"--output_folder={exp}",
            f"--eval_folder={tmp_path / 'direct'}",
            "--device=cpu",
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    direct = json.loads((tmp_path / "direct" / "veri_test2" / "results.json").read_text())
    assert set(staged) == {"cosine", "cosine+mean", "cosine+mean+asnorm"}
    for system in staged:
        for metric in ("EER", "minDCF@0.01", "minDCF@0.05", "trials"):
            assert staged[system][metric] == pytest.approx(direct[system][metric], abs=1e-9)


@pytest.mark.slow
def test_adress_run_sh_mini(env, tmp_path):
    """The transfer recipe's stages: a tiny DINO model, both schedules, one report table."""
    exp = tmp_path / "exp"
    out = _run("ADReSS/ad/run.sh", "--exp", str(exp), "--device", "cpu", env=env)
    table = (exp / "results.md").read_text().splitlines()
    assert len(table) == 4, table  # header, rule, one row per schedule
    for schedule in ("two_stage", "single_stage"):
        assert (exp / schedule / "results.json").is_file()
    again = _run("ADReSS/ad/run.sh", "--exp", str(exp), "--device", "cpu", "--stage", "1", env=env)
    assert again.stdout.count("already done") == 2
    assert "Stage 1:" in out.stdout


@pytest.mark.slow
def test_iemocap_run_sh_mini_one_fold(env, tmp_path):
    """Folds and the aggregate stage: one fold of one schedule, then the table of that fold."""
    exp = tmp_path / "exp"
    args = ["--exp", str(exp), "--device", "cpu", "--fold", "1", "--schedules", "two_stage"]
    out = _run("IEMOCAP/ser/run.sh", *args, env=env)
    table = (exp / "two_stage" / "results.md").read_text()
    assert "| Session 1 |" in table and "| Session 2 |" not in table
    assert "(1/5 folds)" in table
    assert out.stdout.count("| mean ± std |") == 1  # the table once
    alone = _run("IEMOCAP/ser/run.sh", *args, "--stage", "2", env=env)  # stage 2 by itself
    assert alone.stdout.count("| Session 1 |") == 1 and "(1/5 folds)" in alone.stdout
