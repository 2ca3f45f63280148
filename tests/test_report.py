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
