"""The SUPERB report: one Markdown table of WER/PER per upstream from experiment folders.

Each SUPERB downstream run (``recipes/SUPERB/{asr,pr}/train.py``) writes
``<output_folder>/results.json``. This command reads several of them and prints the table of
the LASER paper: one row per upstream, one column per task and test split (PR PER, ASR WER),
each followed by the relative improvement over a named baseline upstream
(``(baseline - value) / baseline``, positive when the error rate is lower)::

    python -m lasersb.report results/superb/pr_hubert results/superb/asr_hubert \\
        results/superb/pr_laser results/superb/asr_laser \\
        --names HuBERT HuBERT LASER LASER --baseline HuBERT

A folder without ``results.json`` is searched one level down (``<folder>/*/results.json``), so
``python -m lasersb.report results/superb --baseline HuBERT`` reads every run under it (names
then come from each run's ``upstream_name``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS_FILE = "results.json"
DEFAULT_SPLITS = ("test-clean", "test-other")
TASK_ORDER = ("pr", "asr")
GENERIC_FOLDER_NAMES = {"upstream_hf", "upstream", "hf", "save", "export", "model"}


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
    """``results.json`` files of an experiment folder (or the file itself).

    Arguments
    ---------
    path : str or Path
        An experiment folder, a folder of experiment folders, or a ``results.json`` file.

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
    direct = path / RESULTS_FILE
    if direct.is_file():
        return [direct]
    nested = sorted(path.glob(f"*/{RESULTS_FILE}"))
    if not nested:
        raise FileNotFoundError(
            f"No {RESULTS_FILE} in {path} or its sub-folders: the downstream run has not "
            "finished its evaluation (run its test stage first)."
        )
    return nested


def load_results(path) -> dict:
    """Load and check one ``results.json`` (keys ``task``, ``metric``, per-split dicts).

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


def _format_rel(value, base) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{100.0 * (base - value) / base:+.1f} %"


def render_table(
    results: list[dict], baseline: str | None = None, splits=DEFAULT_SPLITS, times=None
) -> str:
    """Render the Markdown table: rows are upstreams, columns task/split error rates.

    Arguments
    ---------
    results : list of dict
        From :func:`collect_results` (each with ``name``, ``task``, ``metric``, splits).
    baseline : str, optional
        Name of the baseline row; adds a relative-improvement column after each metric.
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
    """
    if not results:
        raise ValueError("No results to report")
    table: dict[str, dict[tuple[str, str], float]] = {}
    metrics: dict[str, str] = {}
    sources: dict[tuple[str, str], str] = {}
    for run in results:
        name, task = run["name"], str(run["task"]).lower()
        metrics[task] = str(run["metric"])
        row = table.setdefault(name, {})
        for split in splits:
            if isinstance(run.get(split), dict) and "error_rate" in run[split]:
                key = (task, split)
                if key in row:
                    raise ValueError(
                        f"Two runs give {task} {split} for '{name}' ({sources[(name, task)]} and "
                        f"{run.get('_path', '?')}); give them different --names."
                    )
                row[key] = float(run[split]["error_rate"])
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
        header.append(f"{task.upper()} {metrics[task]} {split} (%)")
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
            value = row.get(key)
            cells.append("-" if value is None else f"{value:.2f}")
            if baseline is not None:
                base = table[baseline].get(key)
                cells.append("-" if name == baseline else _format_rel(value, base))
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


def main(argv=None) -> int:
    """Command line: ``python -m lasersb.report EXP_DIR... [--baseline NAME] [--names ...]``."""
    parser = argparse.ArgumentParser(
        prog="lasersb-report",
        description="Markdown table of SUPERB WER/PER per upstream, relative to a baseline.",
    )
    parser.add_argument("experiments", nargs="+", help="experiment folders (or results.json)")
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
        notes = adapter_notes(results)
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
