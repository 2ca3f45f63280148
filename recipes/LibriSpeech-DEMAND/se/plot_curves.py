#!/usr/bin/env python3
"""Plot the training-loss curves of several SE fine-tuning runs on one figure (convergence speed).

Each run folder holds ``loss_curve.csv`` (step, loss) and ``valid_curve.csv`` (step, loss,
ssl_mse, si_snr) written by :class:`lasersb.brains.se_finetune.SEFinetuneBrain`. The losses of
the three variants live on different scales, so the left panel shows each training loss
divided by its first value (moving average over ``--smooth`` steps); the right panel the dev
SSL MSE to the clean speech (the same metric for every variant). A Markdown table gives, per
run, the steps needed to reach 90 % of the run's total reduction of the smoothed loss, the final
relative loss and the final dev SSL MSE.

    python recipes/LibriSpeech-DEMAND/se/plot_curves.py results/se_mse/1986 \\
        results/se_mse_zeropad/1986 results/se_softdtw/1986 --out results/se_curves.png
"""

import argparse
import csv
import sys
from pathlib import Path


def read_curve(path: Path, column: str):
    """``(steps, values)`` of one column of a curve CSV (empty lists when the file is absent)."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


def moving_average(values, window: int):
    """Trailing moving average (the first values average what is available)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def steps_to_fraction(steps, values, fraction=0.9):
    """First step where ``fraction`` of the total reduction ``values[0] - min`` is reached."""
    if not values:
        return None
    start, best = values[0], min(values)
    if start <= best:
        return None
    target = start - fraction * (start - best)
    return next(s for s, v in zip(steps, values) if v <= target)


def main(argv=None):
    """Parse arguments, plot, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (output_folder of train.py)")
    parser.add_argument("--names", nargs="*", help="legend names (default: folder names)")
    parser.add_argument("--smooth", type=int, default=10)
    parser.add_argument("--out", default="se_loss_curves.png")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).parent.name if Path(r).name.isdigit() else Path(r).name
                           for r in args.runs]  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lines = [
        "| run | steps to 90 % of the loss reduction | final loss / initial | final dev SSL MSE |",
        "|---|---|---|---|",
    ]
    for name, run in zip(names, args.runs):
        steps, loss = read_curve(Path(run) / "loss_curve.csv", "loss")
        if not steps:
            print(f"{run}: no loss_curve.csv, skipped", file=sys.stderr)
            continue
        smooth = moving_average(loss, args.smooth)
        relative = [v / smooth[0] for v in smooth]
        left.plot(steps, relative, label=name)
        v_steps, v_mse = read_curve(Path(run) / "valid_curve.csv", "ssl_mse")
        if v_steps:
            right.plot(v_steps, v_mse, marker="o", label=name)
        reach = steps_to_fraction(steps, smooth)
        lines.append(f"| {name} | {reach if reach is not None else '-'} | {relative[-1]:.3f} | "
                     f"{v_mse[-1] if v_mse else float('nan'):.4g} |")  # fmt: skip
    left.set_xlabel("optimiser step")
    left.set_ylabel(f"training loss / initial (moving average {args.smooth})")
    left.set_title("Convergence of the SE fine-tuning losses")
    right.set_xlabel("optimiser step")
    right.set_ylabel("dev frame-wise SSL MSE to clean")
    right.set_title("Dev distance to clean representations")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).with_suffix(".md").write_text(table, encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
