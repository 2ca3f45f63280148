"""Tests of the SUPERB report command (Markdown table from experiment folders)."""

import json

import pytest

from lasersb.report import collect_results, main, render_table


def _write(folder, task, metric, name, rates):
    folder.mkdir(parents=True)
    results = {"task": task, "metric": metric, "upstream": f"/x/{name}", "upstream_name": name}
    for split, rate in rates.items():
        results[split] = {"error_rate": rate, "insertions": 1, "deletions": 2, "substitutions": 3}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_report_table_from_two_folders(tmp_path, capsys):
    base = _write(tmp_path / "pr_base", "pr", "PER", "original", {"test-clean": 5.41})
    laser = _write(tmp_path / "pr_laser", "pr", "PER", "laser", {"test-clean": 4.87})
    assert main([str(base), str(laser), "--baseline", "original"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| Upstream | PR PER test-clean (%) | rel. to original |"
    assert lines[2] == "| original | 5.41 | - |"
    assert lines[3] == "| laser | 4.87 | +10.0 % |"


def test_report_groups_tasks_and_names(tmp_path):
    folders = [
        _write(tmp_path / "a", "asr", "WER", "x", {"test-clean": 6.42, "test-other": 20.0}),
        _write(tmp_path / "b", "pr", "PER", "x", {"test-clean": 5.0}),
        _write(tmp_path / "c", "asr", "WER", "y", {"test-clean": 7.0}),
    ]
    results = collect_results(folders, names=["HuBERT", "HuBERT", "LASER"])
    table = render_table(results, baseline="HuBERT").splitlines()
    assert table[0].startswith("| Upstream | PR PER test-clean (%) | rel. to HuBERT | ASR WER")
    assert "test-other" in table[0]
    assert table[3].startswith("| LASER | - | - | 7.00 | -9.0 % | - | - |")
    # A folder holding several runs is searched one level down.
    assert len(collect_results([tmp_path])) == 3


def test_report_errors(tmp_path, capsys):
    folder = _write(tmp_path / "a", "pr", "PER", "x", {"test-clean": 5.0})
    assert main([str(folder), "--baseline", "nope"]) == 2
    assert "Baseline 'nope'" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        collect_results([tmp_path / "empty"])
    with pytest.raises(ValueError, match="one name per folder"):
        collect_results([folder], names=["a", "b"])
    dup = _write(tmp_path / "dup", "pr", "PER", "x", {"test-clean": 4.0})
    with pytest.raises(ValueError, match="Two runs give pr test-clean"):
        render_table(collect_results([folder, dup]))


def _write_qbe(folder, name, mtwv, layer=-1):
    """A ``qbe_summary.json`` as recipes/QUESST14/qbe/evaluate.py writes it (fields it uses)."""
    folder.mkdir(parents=True)
    summary = {
        split: {"mtwv": value, "atwv": value - 0.01, "upstream": f"/x/{name}", "layer": layer}
        for split, value in mtwv.items()
    }
    (folder / "qbe_summary.json").write_text(json.dumps(summary))
    return folder


def test_report_mtwv_column_higher_is_better(tmp_path):
    _write_qbe(tmp_path / "qbe_o" / "layer_-1", "o", {"dev": 0.09, "eval": 0.0800})
    _write_qbe(tmp_path / "qbe_l" / "layer_-1", "l", {"dev": 0.05, "eval": 0.0600})
    _write_qbe(tmp_path / "qbe_s" / "layer_-1", "s", {"dev": 0.10, "eval": 0.1000})
    runs = [  # a QbE folder above its layer_-1 run is searched one level down
        _write(tmp_path / "pr_o", "pr", "PER", "o", {"test-clean": 5.0}),
        tmp_path / "qbe_o",
        _write(tmp_path / "pr_l", "pr", "PER", "l", {"test-clean": 4.0}),
        tmp_path / "qbe_l",
        tmp_path / "qbe_s" / "layer_-1" / "qbe_summary.json",  # or the file itself
    ]
    results = collect_results(runs, names=["original", "original", "LASER", "LASER", "Spin"])
    table = render_table(results, baseline="original").splitlines()
    assert table[0] == (
        "| Upstream | PR PER test-clean (%) | rel. to original | QbE MTWV eval | rel. to original |"
    )
    assert table[2] == "| original | 5.00 | - | 0.0800 | - |"
    # Lower PER is +20 %; lower MTWV (0.06 against 0.08) is -25 %, higher (0.10) +25 %.
    assert table[3] == "| LASER | 4.00 | +20.0 % | 0.0600 | -25.0 % |"
    assert table[4] == "| Spin | - | - | 0.1000 | +25.0 % |"
    assert "dev" not in table[0]  # SUPERB reports eval; dev is in each run's results.md
    dev = render_table(results, splits=["dev"]).splitlines()
    assert dev[0] == "| Upstream | QbE MTWV dev |" and dev[3] == "| LASER | 0.0500 |"


def test_report_mtwv_zero_baseline_notes_and_errors(tmp_path, capsys):
    base = _write_qbe(tmp_path / "o", "o", {"eval": 0.0})
    laser = _write_qbe(tmp_path / "l", "l", {"eval": 0.02})
    out = tmp_path / "t.md"
    argv = [str(base), str(laser), "--names", "original", "LASER", "--baseline", "original"]
    assert main([*argv, "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[3] == "| LASER | 0.0200 | - |"  # relative to an MTWV of 0: undefined
    assert lines[-2] == (
        "- QbE: QUESST 2014 MTWV (higher is better) of layer -1 (the last) of every upstream"
    )
    assert lines[-1] == "- Environment: not recorded (runs older than environment.json)"
    other = _write_qbe(tmp_path / "m", "m", {"eval": 0.03}, layer=6)
    text = render_table(collect_results([base, other]))
    assert "0.0300" in text
    from lasersb.report import qbe_notes

    assert qbe_notes(collect_results([base, other])) == [
        "- QbE: QUESST 2014 MTWV (higher is better); o: layer -1 (the last), m: layer 6"
    ]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "qbe_summary.json").write_text(json.dumps({"eval": {"atwv": 0.1}}))
    assert main([str(bad)]) == 2
    assert "not written by recipes/QUESST14/qbe/evaluate.py" in capsys.readouterr().err


def test_report_environment_footnote_and_warning(tmp_path):
    from lasersb.environment import collect_environment, write_environment

    env = collect_environment("seed: 1\n", None, "cpu", 1)
    base = _write(tmp_path / "a", "pr", "PER", "original", {"test-clean": 5.0})
    other = _write(tmp_path / "b", "pr", "PER", "laser", {"test-clean": 4.0})
    for folder in (base, other):
        write_environment(folder, hparams_text="seed: 1\n", upstream_source=None)
    from lasersb.report import environment_notes

    notes = environment_notes(collect_results([base, other]))
    assert len(notes) == 1 and notes[0].startswith(f"- Environment: commit {env['commit'][:12]}")
    assert f"torch {env['packages']['torch']}" in notes[0] and f"Python {env['python']}" in notes[0]
    # A row computed with another torch and at another commit: the footnote warns and lists both.
    changed = dict(env, commit="f" * 40, packages=dict(env["packages"], torch="9.9.9"))
    (other / "environment.json").write_text(json.dumps(changed))
    main_notes = environment_notes(collect_results([base, other]))
    assert main_notes[0].startswith("- Warning: the rows come from different environments")
    assert "commit, packages.torch" in main_notes[0]
    assert main_notes[1].startswith("  - original (pr): commit ") and "torch 9.9.9" in main_notes[2]
