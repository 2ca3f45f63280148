#!/usr/bin/env python3
"""Wall time of a SUPERB PR sweep (lr grid x seeds) with and without the shared feature cache.

The sweep is ``recipes/SUPERB/sweep.py`` on the embedded mini corpus: a grid of 2 learning
rates (short search runs) then 2 seeds, every run training the PR head and evaluating dev-clean,
test-clean and the training subset. Three settings, one after the other in this process (same
load, same libraries already imported), each in a fresh folder:

* ``no cache``: ``feature_cache_folder: null``, the frozen upstream runs on every batch of every
  run (s3prl's way);
* ``cache per run``: a cache folder per run (what ``pr_mini.yaml`` used to do): each run pays
  the upstream once per utterance;
* ``shared cache``: one cache for the whole sweep (``recipes/LibriSpeech/ssft/run.sh``'s
  default): the upstream runs once per utterance of the sweep.

The upstream forward passes are counted (utterances through ``SSLUpstream.forward``). Run from
the repository root; prints a Markdown table:

    python bench/superb_sweep.py --upstream base --steps 20
"""

from __future__ import annotations

import argparse
import os
import platform
import runpy
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lasersb.data.mini import get_mini_corpus
from lasersb.models.tiny_upstream import build_tiny_upstream
from lasersb.models.upstream import SSLUpstream

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "recipes" / "SUPERB" / "sweep.py"
HPARAMS = ROOT / "recipes" / "SUPERB" / "pr" / "hparams" / "pr_mini.yaml"


def build_upstream(kind: str, folder: Path) -> Path:
    """A random HuBERT: ``tiny`` (the tests') or ``base`` (HuBERT base's sizes, 95M)."""
    if kind == "tiny":
        return build_tiny_upstream("hubert", folder)
    return build_tiny_upstream(
        "hubert",
        folder,
        hidden_size=768,
        num_layers=12,
        conv_dim=512,
        num_attention_heads=12,
        intermediate_size=3072,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    )


def run_sweep(setting, work, upstream, corpus, steps, grid, seeds, counter):
    """One sweep in a fresh folder; returns ``(wall seconds, utterances forwarded)``."""
    folder = work / setting.replace(" ", "_")
    shutil.rmtree(folder, ignore_errors=True)
    argv = [
        "pr", str(HPARAMS), f"--output_folder={folder / 'sweep'}", "--lr_grid", grid,
        "--seeds", seeds, f"--data_folder={corpus / 'LibriSpeech'}",
        f"--lexicon_file={corpus / 'librispeech-lexicon.txt'}", f"--upstream_source={upstream}",
        f"--manifest_folder={work / 'manifests'}", f"--optimizer_step_limit={steps}",
        "--noprogressbar",
    ]  # fmt: skip
    if setting == "no cache":
        argv.append("--feature_cache_folder=null")
    elif setting == "shared cache":
        argv.append(f"--feature_cache_folder={folder / 'features'}")
    # cache per run: pr_mini.yaml's own feature_cache_folder, <output_folder>/feature_cache
    sweep = runpy.run_path(str(SWEEP), run_name="bench_sweep")["main"]
    before = counter[0]
    start = time.perf_counter()
    sweep(argv)
    return time.perf_counter() - start, counter[0] - before


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", choices=("tiny", "base"), default="base")
    parser.add_argument("--steps", type=int, default=20, help="optimizer_step_limit per run")
    parser.add_argument("--lr_grid", default="1e-3 1e-2")
    parser.add_argument("--seeds", default="1 2")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = get_mini_corpus()
    work = Path(tempfile.mkdtemp(prefix="superb_sweep_bench_"))
    upstream = build_upstream(args.upstream, work / f"{args.upstream}_hubert")
    counter = [0]
    forward = SSLUpstream.forward
    params = sum(p.numel() for p in SSLUpstream(str(upstream), trainable_layers=0).parameters())

    def counting(self, wavs, wav_lens=None):
        counter[0] += int(wavs.shape[0])
        return forward(self, wavs, wav_lens)

    SSLUpstream.forward = counting
    rows = []
    try:
        # Prepare the manifests once (not timed): every setting then reads the same ones.
        run_sweep("shared cache", work / "warmup", upstream, corpus, 1, "", "1", counter)
        for setting in ("no cache", "cache per run", "shared cache"):
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            seconds, forwarded = run_sweep(
                setting, work, upstream, corpus, args.steps, args.lr_grid, args.seeds, counter
            )
            rows.append((setting, seconds, forwarded, load))
    finally:
        SSLUpstream.forward = forward
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"SUPERB PR sweep on the mini corpus: lr grid {args.lr_grid!r} (search runs of "
        f"{max(1, -(-args.steps // 10))} steps), seeds {args.seeds!r}, {args.steps} steps a run; "
        f"random HuBERT ({args.upstream}, {params / 1e6:.1f}M parameters); "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| setting | wall (s) | utterances through the upstream | speed-up | load avg before |")
    print("|---|---:|---:|---:|---|")
    base = rows[0][1]
    for setting, seconds, forwarded, load in rows:
        print(f"| {setting} | {seconds:.1f} | {forwarded} | {base / seconds:.2f}x | {load} |")


if __name__ == "__main__":
    main()
