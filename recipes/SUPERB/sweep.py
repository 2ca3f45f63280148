#!/usr/bin/env python3
"""The SUPERB protocol for one task and one upstream: learning-rate search, then several seeds.

SUPERB's published numbers come from the same downstream config for every upstream except the
learning rate, searched per upstream and task on a log grid (s3prl issues #268, #360); s3prl
does not automate the search. This script does, for ``recipes/SUPERB/{pr,asr}/train.py``:

1. ``--lr_grid "1e-3 1e-2"`` (empty: no search, the hparams file's ``lr``): each rate trains a
   short run (``--lr_search_steps``, default 10 % of the run's ``optimizer_step_limit``) with
   the first seed, scored on the dev split only; the lowest dev error rate picks the rate
   (``<output_folder>/lr_search.json``: every rate's dev error rate, the steps, the choice).
2. ``--seeds "1986 1987 1988"``: one full run per seed with the chosen rate
   (``<output_folder>/seed_<seed>/results.json``, with per-utterance edit counts).
3. ``<output_folder>/sweep.json``: the task, the upstream, the chosen rate, the search's dev
   results and the run of every seed; ``python -m lasersb.report <output_folder>`` reads it
   (mean +- standard deviation over the seeds, paired bootstrap intervals).

Every run of the sweep loads the frozen upstream's hidden states from one feature cache
(``--feature_cache_folder``, keyed by the upstream's checksum, shared by PR, ASR, every rate and
every seed), so the upstream runs once per utterance for the whole sweep. The runs are done one
after the other in this process (``main`` of ``train.py``), so the libraries load once; a
finished run (its ``results.json``) is skipped and an interrupted one resumes from its last
checkpoint when the command is run again.

Run from the repository root (arguments after the sweep's own go to every ``train.py`` run):

    python recipes/SUPERB/sweep.py pr recipes/SUPERB/pr/hparams/pr.yaml \\
        --output_folder=results/superb_pr/hubert --lr_grid "1e-4 1e-3 1e-2" \\
        --seeds "1986 1987 1988" --data_folder=/data/LibriSpeech \\
        --lexicon_file=/data/librispeech-lexicon.txt \\
        --upstream_source=facebook/hubert-base-ls960 --feature_cache_folder=results/features
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import runpy
import sys
from pathlib import Path

import speechbrain as sb
import torch

from lasersb.config import hparam_value

HERE = Path(__file__).resolve().parent
SWEEP_FILE = "sweep.json"
LR_SEARCH_FILE = "lr_search.json"
LR_SEARCH_FRACTION = 0.1
"""Default length of a search run, as a fraction of the full run's ``optimizer_step_limit``."""


def parse_arguments(argv):
    """``(sweep options, train.py arguments)``: the sweep's options, the rest for train.py."""
    parser = argparse.ArgumentParser(
        prog="sweep.py", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("task", help="a folder of recipes/SUPERB with a train.py (pr, asr)")
    parser.add_argument("hparams", help="the task's hparams file")
    parser.add_argument("--output_folder", required=True, help="folder of the whole sweep")
    parser.add_argument("--lr_grid", default="", help='rates to search, e.g. "1e-3 1e-2"')
    parser.add_argument(
        "--lr_search_steps",
        default="",
        help=f"optimiser steps of a search run (default {LR_SEARCH_FRACTION:.0%} of the run's)",
    )
    parser.add_argument("--seeds", default="1986", help='seeds of the final runs, "1986 1987"')
    args, rest = parser.parse_known_args(argv)
    script = HERE / args.task / "train.py"
    if not script.is_file():
        parser.error(f"task {args.task!r}: {script} does not exist (use pr or asr)")
    try:
        args.lr_grid = [float(x) for x in args.lr_grid.split()]
        args.seeds = [int(x) for x in args.seeds.split()]
    except ValueError as err:
        parser.error(f"--lr_grid takes numbers and --seeds integers ({err})")
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    if any(lr <= 0 for lr in args.lr_grid):
        parser.error("--lr_grid rates must be positive")
    return args, rest


def _overrides(hparams, rest) -> tuple[dict, dict]:
    """``(hparams overrides, run options typed)`` of the train.py arguments, as dicts."""
    from ruamel.yaml import YAML

    _, run_opts, overrides = sb.parse_arguments([str(hparams), *rest])
    typed = {name: getattr(run_opts, name) for name in run_opts.overridden_args}
    return (dict(YAML(typ="safe").load(overrides) or {}) if overrides else {}), typed


def run_training(task, argv) -> dict:
    """One ``train.py`` run in this process; returns its ``results.json`` content."""
    script = HERE / task / "train.py"
    saved_argv = sys.argv
    sys.argv = [str(script)]  # setup_experiment copies the script that ran into the run folder
    try:
        return runpy.run_path(str(script), run_name="superb_sweep_run")["main"](argv)
    finally:
        sys.argv = saved_argv
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _finished(folder) -> dict | None:
    path = Path(folder) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def lr_label(lr: float) -> str:
    """Folder-friendly rate: ``1e-03``.

    Example
    -------
    >>> lr_label(0.001), lr_label(5e-4)
    ('1e-03', '5e-04')
    """
    return f"{lr:.0e}" if float(f"{lr:.0e}") == lr else f"{lr:.3e}"


def search_learning_rate(args, rest, dev_split, steps) -> dict:
    """Step 1: a short run per rate, dev only; the lowest dev error rate wins."""
    out = Path(args.output_folder)
    grid = []
    for lr in args.lr_grid:
        folder = out / "lr_search" / f"lr_{lr_label(lr)}"
        results = _finished(folder)
        if results is None:
            print(f"sweep: {args.task} lr search {lr_label(lr)} ({steps} steps) in {folder}")
            results = run_training(
                args.task,
                [
                    args.hparams,
                    *rest,
                    f"--seed={args.seeds[0]}",
                    f"--lr={lr}",
                    f"--optimizer_step_limit={steps}",
                    f"--output_folder={folder}",
                    "--test_splits=[]",
                    "--evaluate_train_set=False",
                    "--evaluate_after_training=True",
                ],
            )
        grid.append(
            {"lr": lr, "dev_error_rate": results[dev_split]["error_rate"], "run": str(folder)}
        )
    best = min(grid, key=lambda point: point["dev_error_rate"])  # ties: the first rate given
    return {"grid": grid, "lr": best["lr"], "steps": steps, "dev_split": dev_split}


def main(argv=None) -> dict:
    """Search, train every seed, write ``sweep.json``; returns its content."""
    args, rest = parse_arguments(sys.argv[1:] if argv is None else argv)
    out = Path(args.output_folder)
    overrides, run_opts = _overrides(args.hparams, rest)
    dev_split = hparam_value(args.hparams, "dev_split", overrides)
    # optimizer_step_limit is a SpeechBrain run option: typed on the command line, it wins.
    full_steps = int(
        run_opts.get("optimizer_step_limit")
        or hparam_value(args.hparams, "optimizer_step_limit", overrides)
    )
    search = None
    lr = float(hparam_value(args.hparams, "lr", overrides))
    if args.lr_grid:
        steps = int(args.lr_search_steps or max(1, math.ceil(LR_SEARCH_FRACTION * full_steps)))
        search = search_learning_rate(args, rest, dev_split, steps)
        search["full_steps"] = full_steps
        lr = search["lr"]
        out.mkdir(parents=True, exist_ok=True)
        (out / LR_SEARCH_FILE).write_text(json.dumps(search, indent=2) + "\n")
        print(f"sweep: {args.task} lr {lr_label(lr)} chosen on {dev_split} ({search['grid']})")
    runs = {}
    for seed in args.seeds:
        folder = out / f"seed_{seed}"
        results = _finished(folder)
        if results is None:
            print(f"sweep: {args.task} seed {seed}, lr {lr_label(lr)} in {folder}")
            extra = [f"--lr={lr}"] if search else []
            results = run_training(
                args.task,
                [args.hparams, *rest, f"--seed={seed}", *extra, f"--output_folder={folder}"],
            )
        runs[str(seed)] = folder.name
    sweep = {
        "task": results["task"],
        "metric": results["metric"],
        "upstream": results["upstream"],
        "upstream_name": results["upstream_name"],
        "seeds": args.seeds,
        "runs": runs,
        "lr": lr,
        "lr_source": "grid search" if search else "hparams",
        "lr_search": search,
        "optimizer_step_limit": full_steps,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_FILE).write_text(json.dumps(sweep, indent=2) + "\n")
    return sweep


if __name__ == "__main__":
    main()
