#!/usr/bin/env python3
"""WER vs trainable parameters: the adapter-placement ablation table (Markdown) and plot (PNG).

Reads the ``results.json`` of adapter-transfer runs (``train.py``; any folders, searched
recursively) and prints one row per run, from the fewest trainable parameters to the most:
setting (``top k``, ``all N``, ``full``, ``frozen``), adapted layers, trainable parameters
(count and % of the model), and WER then CER per evaluated split. The PNG plots WER against the
trainable-parameter percentage (log scale), one line per split, each run labelled.

    python recipes/LibriSpeech/adapters/ablation.py results/adapters \\
        --markdown results/adapters/ablation.md --png results/adapters/ablation.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def setting_name(results: dict) -> str:
    """``top k``, ``all N``, ``layers [...]``, ``full`` or ``frozen`` for one run."""
    mode = results.get("finetune", "adapters")
    if mode != "adapters":
        return mode
    config = results.get("adapters") or {}
    layers, total = list(config.get("layers") or []), config.get("num_layers")
    if total and layers == list(range(total)):
        return f"all {total}"
    if total and layers == list(range(total - len(layers), total)):
        return f"top {len(layers)}"
    return f"layers {layers}"


def collect(paths) -> list[dict]:
    """Load every ``results.json`` under ``paths`` (files or folders)."""
    runs = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for file in files:
            results = json.loads(file.read_text())
            results["_path"] = str(file.parent)
            runs.append(results)
    return runs


def _splits(runs) -> list[str]:
    splits = []
    for run in runs:
        for key, value in run.items():
            if isinstance(value, dict) and "WER" in value and key not in splits:
                splits.append(key)
    return splits


def render(runs) -> str:
    """The Markdown table, rows sorted by trainable parameters (full fine-tuning last)."""
    splits = _splits(runs)
    runs = sorted(runs, key=lambda r: (r.get("finetune") == "full", r["trainable_percent"]))
    header = ["setting", "adapted layers", "trainable params", "trainable %"]
    header += [f"WER {split}" for split in splits] + [f"CER {split}" for split in splits]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for run in runs:
        config = run.get("adapters") or {}
        layers = config.get("layers")
        cells = [
            setting_name(run),
            ", ".join(map(str, layers)) if layers else "-",
            f"{run['parameters']['total']['trainable']:,}",
            f"{run['trainable_percent']:.2f}",
        ]
        for metric in ("WER", "CER"):
            cells += [f"{run[s][metric]:.2f}" if metric in run.get(s, {}) else "-" for s in splits]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs, path) -> None:
    """WER vs trainable-parameter percentage, one line per split."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: r["trainable_percent"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in _splits(runs):
        points = [
            (r["trainable_percent"], r[split]["WER"], setting_name(r)) for r in runs if split in r
        ]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=split)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("trainable parameters (% of the model, log scale)")
    ax.set_ylabel("WER (%)")
    ax.set_title("Adapter transfer: WER vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> str:
    """Print (and optionally write) the table and the plot; returns the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders or a parent folder")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--png", default=None, help="write the plot here")
    args = parser.parse_args(argv)
    runs = collect(args.paths)
    if not runs:
        sys.exit(f"No results.json under {' '.join(args.paths)}: run the training stages first.")
    table = render(runs)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.png:
        plot(runs, args.png)
    return table


if __name__ == "__main__":
    main()
