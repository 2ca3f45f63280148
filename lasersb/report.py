"""The SUPERB report: one Markdown table of PER/WER/MTWV per upstream from experiment folders.

Each SUPERB downstream run (``recipes/SUPERB/{asr,pr}/train.py``) writes
``<output_folder>/results.json``; each QbE run (``recipes/QUESST14/qbe/evaluate.py``) writes
``<output_folder>/qbe_summary.json``. This command reads several of them and prints the table of
the LASER paper: one row per upstream, one column per task and test split (PR PER and ASR WER on
``test-clean``/``test-other``, QbE MTWV on QUESST 2014 ``eval``), each followed by the relative
improvement over a named baseline upstream, positive when the upstream is better:
``(baseline - value) / baseline`` for the error rates (lower is better) and
``(value - baseline) / baseline`` for MTWV (higher is better); ``-`` when the baseline is 0
(MTWV is 0 when no threshold beats declaring nothing, e.g. a random upstream)::

    python -m lasersb.report results/superb/pr_hubert results/superb/asr_hubert \\
        results/superb/pr_laser results/superb/asr_laser \\
        --names HuBERT HuBERT LASER LASER --baseline HuBERT

A folder without ``results.json`` (or ``qbe_summary.json``) is searched one level down
(``<folder>/*/results.json``), so ``python -m lasersb.report results/superb --baseline HuBERT``
reads every run under it (names then come from each run's ``upstream_name``, or the upstream).

A folder written by ``recipes/SUPERB/sweep.py`` (``sweep.json``: a learning-rate search and one
run per seed) is one row entry: its cells show the mean +- sample standard deviation over the
seeds and ``n``, the relative change is computed on the means, and a column gives the rate the
search chose (its grid's dev results are listed under the table). ``--intervals`` (on whenever
a row has several seeds or a search, in ``recipes/LibriSpeech/ssft/run.sh``) adds the 95 %
paired bootstrap interval of each relative change, resampling the test utterances (and seeds)
from the per-utterance edit counts every run writes (:mod:`lasersb.metrics.bootstrap`);
``n.s.`` marks an interval that contains 0. Under the table, the ``environment.json`` of the
runs (:mod:`lasersb.environment`) gives the commit and library versions, with a warning when the
rows come from different environments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = "results.json"
QBE_SUMMARY_FILE = "qbe_summary.json"
SWEEP_FILE = "sweep.json"
RESULT_FILES = (SWEEP_FILE, RESULTS_FILE, QBE_SUMMARY_FILE)
DEFAULT_SPLITS = ("test-clean", "test-other", "eval", "eval (last layer)")
LAST_LAYER = " (last layer)"  # QbE --layer=all: the last layer's split beside the chosen one
TASK_ORDER = ("pr", "asr", "qbe")
TASK_NAMES = {"pr": "PR", "asr": "ASR", "qbe": "QbE"}
GENERIC_FOLDER_NAMES = {"upstream_hf", "upstream", "hf", "save", "export", "model"}


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is read from a run's split dict, printed, and compared with the baseline."""

    key: str
    higher_is_better: bool
    percent: bool
    digits: int


ERROR_RATE = MetricSpec(key="error_rate", higher_is_better=False, percent=True, digits=2)
METRICS = {
    "PER": ERROR_RATE,
    "WER": ERROR_RATE,
    "MTWV": MetricSpec(key="mtwv", higher_is_better=True, percent=False, digits=4),
}


def metric_spec(metric) -> MetricSpec:
    """The :class:`MetricSpec` of a metric name (unknown names are error rates in %).

    Example
    -------
    >>> metric_spec("MTWV").higher_is_better, metric_spec("CER").key
    (True, 'error_rate')
    """
    return METRICS.get(str(metric).upper(), ERROR_RATE)


def relative_improvement(value, base, higher_is_better=False):
    """Relative change of ``value`` against ``base``, positive when ``value`` is better.

    ``(base - value) / |base|`` when lower is better (error rates), ``(value - base) / |base|``
    when higher is better (MTWV); ``None`` when either is missing or the baseline is 0.

    Example
    -------
    >>> round(relative_improvement(4.95, 5.41), 4)  # lower PER: better
    0.085
    >>> round(relative_improvement(0.0800, 0.0736, higher_is_better=True), 4)  # higher MTWV
    0.087
    >>> relative_improvement(0.01, 0.0, higher_is_better=True) is None
    True
    """
    if value is None or base is None or base == 0:
        return None
    change = value - base if higher_is_better else base - value
    return change / abs(base)


def upstream_display_name(source) -> str:
    """Short name of an upstream given as a hub id or a local folder.

    A hub id is kept as it is; a folder gives its name, or its parent's name when the folder
    has a generic name such as ``upstream_hf`` (the SSFT export folder).

    Example
    -------
    >>> upstream_display_name("facebook/hubert-base-ls960")
    'facebook/hubert-base-ls960'
    >>> upstream_display_name("/exp/laser/1986/upstream_hf")
    'laser/1986'
    """
    source = str(source)
    path = Path(source)
    looks_like_path = source.startswith((".", "/", "~")) or path.exists() or len(path.parts) > 2
    if not looks_like_path:
        return source
    parts = [p for p in path.parts if p not in ("/", "")]
    if len(parts) > 1 and parts[-1] in GENERIC_FOLDER_NAMES:
        return "/".join(parts[-3:-1])
    return parts[-1] if parts else source


def find_results(path) -> list[Path]:
    """``results.json`` / ``qbe_summary.json`` files of an experiment folder (or the file itself).

    Arguments
    ---------
    path : str or Path
        An experiment folder, a folder of experiment folders, or a results file.

    Returns
    -------
    list of Path

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a").mkdir(), (d / "a" / RESULTS_FILE).write_text("{}")
    >>> [p.parent.name for p in find_results(d)]
    ['a']
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"Experiment folder {path} does not exist")
    for name in RESULT_FILES:
        if (path / name).is_file():
            return [path / name]
    nested = sorted(file for name in RESULT_FILES for file in path.glob(f"*/{name}"))
    if not nested:
        raise FileNotFoundError(
            f"No {' or '.join(RESULT_FILES)} in {path} or its sub-folders: the downstream run "
            "has not finished its evaluation (run its test stage first)."
        )
    return nested


def qbe_results(summary: dict, path) -> dict:
    """A QbE ``qbe_summary.json`` (``{split: metrics}``) in the form of ``results.json``.

    Returns ``{"task": "qbe", "metric": "MTWV", "upstream": ..., "layer": ..., split: metrics}``.

    Example
    -------
    >>> r = qbe_results({"eval": {"mtwv": 0.07, "upstream": "u", "layer": -1}}, "x.json")
    >>> r["task"], r["metric"], r["layer"], r["eval"]["mtwv"]
    ('qbe', 'MTWV', -1, 0.07)
    """
    # --layer=all: the dev-chosen layer's splits, the last layer's, and the selection.
    last = summary.get("last_layer") or {}
    selection = summary.get("layer_selection")
    summary = {k: v for k, v in summary.items() if k not in ("last_layer", "layer_selection")}
    splits = {k: v for k, v in summary.items() if isinstance(v, dict)}
    if not splits or not all("mtwv" in m for m in splits.values()):
        raise ValueError(
            f"{path} has no per-split 'mtwv': it was not written by "
            "recipes/QUESST14/qbe/evaluate.py (rerun the QbE evaluation)"
        )
    first = next(iter(splits.values()))
    return {
        "task": "qbe",
        "metric": "MTWV",
        "upstream": first.get("upstream"),
        "layer": first.get("layer"),
        "layer_selection": selection,
        **splits,
        **{f"{split}{LAST_LAYER}": metrics for split, metrics in last.items()},
    }


def sweep_results(sweep: dict, path) -> dict:
    """The runs of a ``sweep.json`` (one per seed) as one result with per-split statistics.

    Each split dict holds the mean over the seeds of each metric value, and ``std`` (sample
    standard deviation, ``None`` for one seed) and ``n`` of the metric's key; ``_runs`` keeps
    every seed's results (with ``_path``), and ``lr``/``lr_search`` come from the sweep.

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for seed, per in ((1, 5.0), (2, 7.0)):
    ...     _ = (d / f"seed_{seed}").mkdir()
    ...     _ = (d / f"seed_{seed}" / RESULTS_FILE).write_text(json.dumps(
    ...         {"task": "pr", "metric": "PER", "upstream": "u", "dev-clean": {"error_rate": 1},
    ...          "test-clean": {"error_rate": per}}))
    >>> sweep = {"runs": {"1": "seed_1", "2": "seed_2"}, "lr": 0.01, "lr_search": None}
    >>> r = sweep_results(sweep, d / SWEEP_FILE)
    >>> r["test-clean"]["error_rate"], round(r["test-clean"]["std"], 3), r["test-clean"]["n"]
    (6.0, 1.414, 2)
    """
    path = Path(path)
    runs = []
    for seed, folder in sweep["runs"].items():
        file = path.parent / folder / RESULTS_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} (seed {seed} of {path}) does not exist: rerun the sweep to finish it"
            )
        run = load_results(file)
        run["seed"] = int(seed)
        runs.append(run)
    first = runs[0]
    key = metric_spec(first["metric"]).key
    merged = {k: v for k, v in first.items() if not isinstance(v, dict) or k == "upstream_adapters"}
    for split, metrics in first.items():
        if not isinstance(metrics, dict) or key not in metrics:
            continue
        if not all(isinstance(run.get(split), dict) for run in runs):
            continue
        mean = {
            name: statistics.fmean(float(run[split][name]) for run in runs)
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        values = [float(run[split][key]) for run in runs]
        mean["std"] = statistics.stdev(values) if len(values) > 1 else None
        mean["n"] = len(values)
        merged[split] = mean
    merged.update(
        _runs=runs,
        seeds=[run["seed"] for run in runs],
        lr=sweep["lr"],
        lr_search=sweep["lr_search"],
    )
    return merged


def load_results(path) -> dict:
    """Load and check one ``results.json`` (keys ``task``, ``metric``, per-split dicts).

    A ``qbe_summary.json`` is read through :func:`qbe_results`, a ``sweep.json`` through
    :func:`sweep_results`.

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / RESULTS_FILE
    >>> _ = f.write_text(json.dumps({"task": "pr", "metric": "PER", "upstream": "x",
    ...                              "test-clean": {"error_rate": 5.0}}))
    >>> load_results(f)["test-clean"]["error_rate"]
    5.0
    """
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the evaluation") from err
    if path.name == QBE_SUMMARY_FILE:
        results = qbe_results(results, path)
    elif path.name == SWEEP_FILE:
        results = sweep_results(results, path)
    for key in ("task", "metric"):
        if key not in results:
            raise ValueError(
                f"{path} has no '{key}' key: it was not written by a SUPERB downstream recipe"
            )
    results["_path"] = str(path)
    return results


def collect_results(paths, names=None) -> list[dict]:
    """Load the results of several experiments and attach a display name to each.

    Arguments
    ---------
    paths : list of str or Path
        Experiment folders (or ``results.json`` files).
    names : list of str, optional
        One name per path (repeated names group runs of the same upstream).

    Returns
    -------
    list of dict
        Each with ``name`` added.
    """
    if names is not None and len(names) != len(paths):
        raise ValueError(
            f"--names has {len(names)} entries but {len(paths)} experiment folders were given; "
            "give one name per folder."
        )
    collected = []
    for i, path in enumerate(paths):
        for file in find_results(path):
            results = load_results(file)
            if names is not None:
                name = names[i]
            else:
                name = results.get("upstream_name") or upstream_display_name(
                    results.get("upstream", file.parent.name)
                )
            results["name"] = str(name)
            collected.append(results)
    return collected


def ssft_time(summary_path) -> tuple[float, str]:
    """Fine-tuning time of one SSFT run from its ``ssft_summary.json``: ``(hours, unit)``.

    On CUDA the time is in GPU-hours (wall time x processes); on a CPU it is wall-clock hours.

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "ssft_summary.json"
    >>> _ = f.write_text(json.dumps({"wall_time_s": 1800, "device": "cuda:0", "world_size": 2}))
    >>> ssft_time(f)
    (1.0, 'GPU-h')
    """
    path = Path(summary_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the SSFT run has not finished")
    summary = json.loads(path.read_text(encoding="utf-8"))
    hours = float(summary["wall_time_s"]) / 3600.0
    if str(summary.get("device", "cpu")).startswith("cuda"):
        return hours * int(summary.get("world_size", 1)), "GPU-h"
    return hours, "h (CPU wall)"


def _format_rel(value, base, higher_is_better=False) -> str:
    change = relative_improvement(value, base, higher_is_better)
    return "-" if change is None else f"{100.0 * change:+.1f} %"


def _format_value(value, split_stats, digits) -> str:
    """``5.41``, or ``5.41 ± 0.12 (n=3)`` for the mean of several seeds."""
    if value is None:
        return "-"
    n = split_stats.get("n", 1) if split_stats else 1
    if n > 1:
        return f"{value:.{digits}f} ± {split_stats['std']:.{digits}f} (n={n})"
    return f"{value:.{digits}f}"


def _utterance_errors(run: dict, split: str) -> list[dict] | None:
    """Per-seed ``{id: (edits, ref)}`` of a run's split, or ``None`` if a seed lacks them."""
    from lasersb.metrics.bootstrap import read_utterance_errors

    per_seed = []
    for seed_run in run.get("_runs", [run]):
        entry = seed_run.get(split)
        if not isinstance(entry, dict) or "utterance_errors" not in entry:
            return None
        per_seed.append(
            read_utterance_errors(Path(seed_run["_path"]).parent / entry["utterance_errors"])
        )
    return per_seed


def change_interval(base_run, run, split, n_resamples=9999, rng=0) -> dict | None:
    """Paired bootstrap interval of the relative change of ``run`` against ``base_run``.

    Error rates: utterances (and seeds) resampled,
    :func:`lasersb.metrics.bootstrap.paired_bootstrap_change`; QbE MTWV: queries resampled,
    :func:`~lasersb.metrics.bootstrap.paired_bootstrap_mtwv_change`. ``None`` when the
    per-utterance (per-query) files are missing or the metric has no such files.
    """
    from lasersb.metrics.bootstrap import aligned_edits, paired_bootstrap_change

    if run["task"] == "qbe":
        return _mtwv_interval(base_run, run, split, n_resamples, rng)
    if metric_spec(run["metric"]).key != "error_rate":
        return None
    base, system = _utterance_errors(base_run, split), _utterance_errors(run, split)
    if base is None or system is None:
        return None
    arrays = aligned_edits(base, system)
    return paired_bootstrap_change(*arrays, n_resamples=n_resamples, rng=rng)


def _qbe_trials_file(run: dict, split: str) -> Path:
    """The ``trials.npz`` of a QbE run's split (``--layer=all``: of the layer it reports)."""
    folder = Path(run["_path"]).parent
    selection = run.get("layer_selection")
    if split.endswith(LAST_LAYER):
        split = split[: -len(LAST_LAYER)]
        folder = folder / f"layer_{selection['last']}"
    elif selection:
        folder = folder / f"layer_{selection['selected']}"
    return folder / split / "trials.npz"


def _mtwv_interval(base_run, run, split, n_resamples, rng) -> dict | None:
    """Paired bootstrap (over queries) of the relative MTWV change; ``None`` without trials."""
    import numpy as np

    from lasersb.metrics.bootstrap import paired_bootstrap_mtwv_change

    files = [_qbe_trials_file(r, split) for r in (base_run, run)]
    if not all(f.is_file() for f in files):
        return None
    trials = [dict(np.load(f)) for f in files]
    return paired_bootstrap_mtwv_change(*trials, n_resamples=n_resamples, rng=rng)


def _format_interval(interval) -> str:
    if interval is None or interval["low"] is None:
        return "-"
    text = f"[{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}] %"
    return text + " n.s." if interval["contains_zero"] else text


def render_table(
    results: list[dict],
    baseline: str | None = None,
    splits=DEFAULT_SPLITS,
    times=None,
    intervals: bool = False,
    n_resamples: int = 9999,
    rng=0,
) -> str:
    """Render the Markdown table: rows are upstreams, columns task/split metrics.

    Arguments
    ---------
    results : list of dict
        From :func:`collect_results` (each with ``name``, ``task``, ``metric``, splits).
    baseline : str, optional
        Name of the baseline row; adds a relative-improvement column after each metric
        (:func:`relative_improvement`: positive = better, whichever direction the metric has).
    splits : Sequence[str]
        Splits to show, in order, when at least one run has them.
    times : dict, optional
        ``{name: (hours, unit)}`` fine-tuning times (:func:`ssft_time`); adds a last column.
    intervals : bool
        With a baseline: a ``95 % CI`` column after each relative change
        (:func:`change_interval`; ``n.s.`` when the interval contains 0).
    n_resamples : int
        Bootstrap resamples of each interval.
    rng : int or numpy.random.Generator
        Seed of the bootstrap (the table is reproducible).

    Returns
    -------
    str

    Example
    -------
    >>> runs = [
    ...     {"name": "HuBERT", "task": "pr", "metric": "PER", "test-clean": {"error_rate": 5.41}},
    ...     {"name": "LASER", "task": "pr", "metric": "PER", "test-clean": {"error_rate": 4.95}},
    ... ]
    >>> print(render_table(runs, baseline="HuBERT"))
    | Upstream | PR PER test-clean (%) | rel. to HuBERT |
    | --- | ---: | ---: |
    | HuBERT | 5.41 | - |
    | LASER | 4.95 | +8.5 % |
    >>> runs = [{"name": "HuBERT", "task": "qbe", "metric": "MTWV", "eval": {"mtwv": 0.0736}},
    ...         {"name": "LASER", "task": "qbe", "metric": "MTWV", "eval": {"mtwv": 0.0800}}]
    >>> print(render_table(runs, baseline="HuBERT"))
    | Upstream | QbE MTWV eval | rel. to HuBERT |
    | --- | ---: | ---: |
    | HuBERT | 0.0736 | - |
    | LASER | 0.0800 | +8.7 % |
    """
    if not results:
        raise ValueError("No results to report")
    table: dict[str, dict[tuple[str, str], float]] = {}
    runs_of: dict[str, dict[str, dict]] = {}
    metrics: dict[str, str] = {}
    sources: dict[tuple[str, str], str] = {}
    for run in results:
        name, task = run["name"], str(run["task"]).lower()
        metrics[task] = str(run["metric"])
        key_name = metric_spec(run["metric"]).key
        row = table.setdefault(name, {})
        for split in splits:
            if isinstance(run.get(split), dict) and key_name in run[split]:
                key = (task, split)
                if key in row:
                    raise ValueError(
                        f"Two runs give {task} {split} for '{name}' ({sources[(name, task)]} and "
                        f"{run.get('_path', '?')}); give them different --names."
                    )
                row[key] = float(run[split][key_name])
                sources[(name, task)] = run.get("_path", "?")
                runs_of.setdefault(name, {})[task] = run
    if baseline is not None and baseline not in table:
        raise ValueError(
            f"Baseline '{baseline}' is not one of the upstreams {sorted(table)}; pass one of "
            "them to --baseline (or name the runs with --names)."
        )
    tasks = sorted(metrics, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else 99, t))
    searched = {t for t in tasks for r in runs_of.values() if r.get(t, {}).get("lr_search")}
    columns = []  # (task, split) of a metric, or (task, None): the task's chosen-rate column
    for task in tasks:
        columns += [
            (task, split) for split in splits if any((task, split) in row for row in table.values())
        ]
        if task in searched:
            columns.append((task, None))
    header = ["Upstream"]
    align = ["---"]
    for task, split in columns:
        if split is None:
            header.append(f"{TASK_NAMES.get(task, task.upper())} lr")
            align.append("---:")
            continue
        unit = " (%)" if metric_spec(metrics[task]).percent else ""
        header.append(f"{TASK_NAMES.get(task, task.upper())} {metrics[task]} {split}{unit}")
        align.append("---:")
        if baseline is not None:
            header.append(f"rel. to {baseline}")
            align.append("---:")
            if intervals:
                header.append("95 % CI")
                align.append("---:")
    if times is not None:
        header.append("fine-tuning time")
        align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for name, row in table.items():
        cells = [name]
        for key in columns:
            task, split = key
            run = runs_of.get(name, {}).get(task)
            if split is None:
                cells.append(f"{run['lr']:.0e}" if run and run.get("lr_search") else "-")
                continue
            spec = metric_spec(metrics[task])
            value = row.get(key)
            cells.append(_format_value(value, run.get(split) if run else None, spec.digits))
            if baseline is not None:
                base = table[baseline].get(key)
                rel = _format_rel(value, base, spec.higher_is_better)
                cells.append("-" if name == baseline else rel)
                if intervals:
                    interval = None
                    if name != baseline and value is not None and base is not None:
                        base_run = runs_of[baseline][task]
                        interval = change_interval(base_run, run, split, n_resamples, rng)
                    cells.append(_format_interval(interval))
        if times is not None:
            cells.append(f"{times[name][0]:.3g} {times[name][1]}" if name in times else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_notes(results: list[dict], intervals: bool = False, n_resamples: int = 9999):
    """Lines on the seeds, the learning-rate searches and the intervals of the table.

    Example
    -------
    >>> search = {"grid": [{"lr": 0.001, "dev_error_rate": 30.0},
    ...                    {"lr": 0.01, "dev_error_rate": 25.0}],
    ...           "lr": 0.01, "steps": 10, "full_steps": 100, "dev_split": "dev-clean"}
    >>> runs = [{"name": "x", "task": "pr", "metric": "PER", "seeds": [1, 2],
    ...          "lr": 0.01, "lr_search": search}]
    >>> print("\\n".join(protocol_notes(runs)))
    - PR x: lr 1e-02 chosen on dev-clean PER from 1e-03: 30.00, 1e-02: 25.00 (10 steps each, 10 % of the 100-step run)
    - Seeds of the heads: 1, 2 (cells: mean ± sample standard deviation over n seeds; relative changes on the means)
    """  # noqa: E501
    notes = []
    for run in results:
        search = run.get("lr_search")
        if not search:
            continue
        grid = ", ".join(f"{p['lr']:.0e}: {p['dev_error_rate']:.2f}" for p in search["grid"])
        share = 100.0 * search["steps"] / search["full_steps"]
        notes.append(
            f"- {TASK_NAMES.get(run['task'], run['task'])} {run['name']}: lr {search['lr']:.0e} "
            f"chosen on {search['dev_split']} {run['metric']} from {grid} ({search['steps']} "
            f"steps each, {share:.3g} % of the {search['full_steps']}-step run)"
        )
    seeds = sorted({tuple(run["seeds"]) for run in results if run.get("seeds")})
    if any(len(s) > 1 for s in seeds):
        listed = "; ".join(", ".join(str(x) for x in s) for s in seeds)
        notes.append(
            f"- Seeds of the heads: {listed} (cells: mean ± sample standard deviation over n "
            "seeds; relative changes on the means)"
        )
    if intervals:
        notes.append(
            "- 95 % CI: paired bootstrap of the relative change over the test utterances "
            f"(and over each upstream's seeds; QbE: over the queries), {n_resamples} resamples; "
            "n.s.: the interval contains 0 (no evidence of a change)"
        )
    return notes


def environment_notes(results: list[dict]) -> list[str]:
    """The footnote naming the commit and versions of the runs, or warning that they differ.

    Example
    -------
    >>> environment_notes([{"name": "x", "task": "pr"}])
    ['- Environment: not recorded (runs older than environment.json)']
    """
    from lasersb.environment import (
        environment_differences,
        environment_summary,
        read_environment,
    )

    envs = {}
    for run in results:
        for seed_run in run.get("_runs", [run]):
            if "_path" not in seed_run:
                continue
            env = read_environment(Path(seed_run["_path"]).parent)
            if env is not None:
                envs[f"{run['name']} ({run['task']})"] = env
    if not envs:
        return ["- Environment: not recorded (runs older than environment.json)"]
    differing = environment_differences(envs)
    if not differing:
        return [f"- Environment: {environment_summary(next(iter(envs.values())))}"]
    notes = [
        "- Warning: the rows come from different environments (they differ in "
        + ", ".join(differing)
        + "); their numbers may not be comparable:"
    ]
    for label, env in envs.items():
        notes.append(f"  - {label}: {environment_summary(env)}")
    return notes


def adapter_notes(results: list[dict]) -> list[str]:
    """One line per upstream whose runs carried lasersb adapters (from ``upstream_adapters``).

    Printed under the table, so a row of an adapter-SSFT upstream says which adapter set it
    was evaluated with (count, layers, bottleneck, checksum of the adapter weights).

    Example
    -------
    >>> adapters = {"count": 4, "checksum": "0123abcd",
    ...             "config": {"layers": [10, 11], "bottleneck": 64}}
    >>> notes = adapter_notes([{"name": "laser", "task": "pr", "upstream_adapters": adapters},
    ...                        {"name": "original", "task": "pr", "upstream_adapters": None}])
    >>> print(*notes)
    - laser (pr): 4 lasersb adapters in the upstream (layers [10, 11], bottleneck 64, 0123abcd)
    """
    notes = []
    for run in results:
        adapters = run.get("upstream_adapters")
        if not adapters:
            continue
        config = adapters.get("config", {})
        notes.append(
            f"- {run['name']} ({run['task']}): {adapters['count']} lasersb adapters in the "
            f"upstream (layers {config.get('layers')}, bottleneck {config.get('bottleneck')}, "
            f"{adapters.get('checksum')})"
        )
    return notes


def qbe_notes(results: list[dict]) -> list[str]:
    """One line saying which hidden layer the QbE column used (per upstream if they differ).

    Example
    -------
    >>> print(*qbe_notes([{"name": "a", "task": "qbe", "layer": -1},
    ...                   {"name": "b", "task": "qbe", "layer": -1}]))
    - QbE: QUESST 2014 MTWV (higher is better) of layer -1 (the last) of every upstream
    """
    runs = {run["name"]: run for run in results if run["task"] == "qbe"}
    layers = {name: run.get("layer") for name, run in runs.items()}
    if not layers:
        return []

    def describe(run):
        layer, selection = run.get("layer"), run.get("layer_selection")
        if selection:
            return f"layer {layer} (best {selection['split']} MTWV of layers 0-{selection['last']})"
        return f"layer {layer} (the last)" if layer == -1 else f"layer {layer}"

    described = {name: describe(run) for name, run in runs.items()}
    last = (
        "; the last layer's beside it"
        if any(r.get("layer_selection") for r in runs.values())
        else ""
    )
    if len(set(described.values())) == 1:
        layer = next(iter(described.values()))
        return [f"- QbE: QUESST 2014 MTWV (higher is better) of {layer} of every upstream{last}"]
    per = ", ".join(f"{name}: {text}" for name, text in described.items())
    return [f"- QbE: QUESST 2014 MTWV (higher is better); {per}{last}"]


def main(argv=None) -> int:
    """Command line: ``python -m lasersb.report EXP_DIR... [--baseline NAME] [--names ...]``."""
    parser = argparse.ArgumentParser(
        prog="lasersb-report",
        description="Markdown table of SUPERB PER/WER/MTWV per upstream, relative to a baseline.",
    )
    parser.add_argument(
        "experiments", nargs="+", help="experiment folders (or results.json / qbe_summary.json)"
    )
    parser.add_argument("--baseline", default=None, help="name of the baseline upstream row")
    parser.add_argument("--names", nargs="+", default=None, help="one display name per folder")
    parser.add_argument(
        "--splits", nargs="+", default=list(DEFAULT_SPLITS), help="splits to show, in order"
    )
    parser.add_argument("--output", default=None, help="also write the table to this file")
    parser.add_argument(
        "--ssft",
        nargs="*",
        default=None,
        metavar="NAME=SUMMARY",
        help="fine-tuning time column: NAME=path/to/ssft_summary.json per fine-tuned row",
    )
    parser.add_argument(
        "--intervals",
        action="store_true",
        help="95 %% paired bootstrap interval of each relative change (needs --baseline)",
    )
    parser.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples")
    args = parser.parse_args(argv)
    try:
        results = collect_results(args.experiments, args.names)
        times = None
        if args.ssft is not None:
            times = {}
            for item in args.ssft:
                name, sep, path = item.partition("=")
                if not sep:
                    raise ValueError(f"--ssft takes NAME=path/to/ssft_summary.json, got {item!r}")
                times[name] = ssft_time(path)
        table = render_table(
            results,
            baseline=args.baseline,
            splits=args.splits,
            times=times,
            intervals=args.intervals and args.baseline is not None,
            n_resamples=args.resamples,
        )
        notes = qbe_notes(results) + adapter_notes(results)
        notes += protocol_notes(
            results, args.intervals and args.baseline is not None, args.resamples
        )
        notes += environment_notes(results)
        table += "\n\n" + "\n".join(notes)
    except (FileNotFoundError, ValueError) as err:
        print(f"lasersb-report: error: {err}", file=sys.stderr)
        return 2
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
