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
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = "results.json"
QBE_SUMMARY_FILE = "qbe_summary.json"
RESULT_FILES = (RESULTS_FILE, QBE_SUMMARY_FILE)
DEFAULT_SPLITS = ("test-clean", "test-other", "eval")
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
        **splits,
    }


def load_results(path) -> dict:
    """Load and check one ``results.json`` (keys ``task``, ``metric``, per-split dicts).

    A ``qbe_summary.json`` is read through :func:`qbe_results`.

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


def render_table(
    results: list[dict], baseline: str | None = None, splits=DEFAULT_SPLITS, times=None
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
    if baseline is not None and baseline not in table:
        raise ValueError(
            f"Baseline '{baseline}' is not one of the upstreams {sorted(table)}; pass one of "
            "them to --baseline (or name the runs with --names)."
        )
    tasks = sorted(metrics, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else 99, t))
    columns = [
        (task, split)
        for task in tasks
        for split in splits
        if any((task, split) in row for row in table.values())
    ]
    header = ["Upstream"]
    align = ["---"]
    for task, split in columns:
        unit = " (%)" if metric_spec(metrics[task]).percent else ""
        header.append(f"{TASK_NAMES.get(task, task.upper())} {metrics[task]} {split}{unit}")
        align.append("---:")
        if baseline is not None:
            header.append(f"rel. to {baseline}")
            align.append("---:")
    if times is not None:
        header.append("fine-tuning time")
        align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for name, row in table.items():
        cells = [name]
        for key in columns:
            spec = metric_spec(metrics[key[0]])
            value = row.get(key)
            cells.append("-" if value is None else f"{value:.{spec.digits}f}")
            if baseline is not None:
                base = table[baseline].get(key)
                rel = _format_rel(value, base, spec.higher_is_better)
                cells.append("-" if name == baseline else rel)
        if times is not None:
            cells.append(f"{times[name][0]:.3g} {times[name][1]}" if name in times else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    layers = {run["name"]: run.get("layer") for run in results if run["task"] == "qbe"}
    if not layers:
        return []

    def describe(layer):
        return f"layer {layer} (the last)" if layer == -1 else f"layer {layer}"

    if len(set(layers.values())) == 1:
        layer = describe(next(iter(layers.values())))
        return [f"- QbE: QUESST 2014 MTWV (higher is better) of {layer} of every upstream"]
    per = ", ".join(f"{name}: {describe(layer)}" for name, layer in layers.items())
    return [f"- QbE: QUESST 2014 MTWV (higher is better); {per}"]


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
        table = render_table(results, baseline=args.baseline, splits=args.splits, times=times)
        notes = qbe_notes(results) + adapter_notes(results)
        if notes:
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
