"""Time ``prepare_librispeech`` on a synthetic LibriSpeech tree with 1 and with N workers.

Builds ``--files`` short 16 kHz FLAC files (0.1 to 0.5 s) in the LibriSpeech layout
(``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` + ``*.trans.txt``) in a
temporary folder: five distinct files are written with soundfile and every utterance is a hard
link to one of them (a copy where hard links are not allowed), so generating 100k files takes
seconds. Then ``prepare_librispeech(..., with_phonemes=False)`` runs once per worker count
(each into its own save folder, so idempotence does not skip the work) and a Markdown table
of wall-clock times is printed, with a check that the manifests are byte-identical.

What is measured is the per-file work of the preparation (directory walk, header read, one
seek + tail decode, CSV writing). The audio data of the hard links is five inodes, so it is
in the page cache: the numbers are a lower bound for a corpus on a cold disk (real
LibriSpeech: 281k files, 60 GB), where the I/O is what extra workers overlap.

Usage::

    python bench/prepare_workers.py [--files 100000] [--workers 1 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLIT = "train-clean-100"
UTTS_PER_CHAPTER = 100
CHAPTERS_PER_SPEAKER = 4
DURATIONS = (0.1, 0.2, 0.3, 0.4, 0.5)  # seconds at 16 kHz


def build_tree(root: Path, num_files: int) -> Path:
    """Write the synthetic ``LibriSpeech/<SPLIT>`` tree under ``root``; return the split dir."""
    rng = np.random.default_rng(0)
    templates = []
    for index, seconds in enumerate(DURATIONS):
        path = root / f"template{index}.flac"
        soundfile.write(path, rng.uniform(-0.3, 0.3, int(16000 * seconds)), 16000)
        templates.append(path)
    split_dir = root / "LibriSpeech" / SPLIT
    link = os.link
    made = 0
    chapter_index = 0
    while made < num_files:
        speaker = 1000 + chapter_index // CHAPTERS_PER_SPEAKER
        chapter = 10000 + chapter_index
        folder = split_dir / str(speaker) / str(chapter)
        folder.mkdir(parents=True)
        lines = []
        for utt in range(min(UTTS_PER_CHAPTER, num_files - made)):
            utt_id = f"{speaker}-{chapter}-{utt:04d}"
            target = folder / f"{utt_id}.flac"
            source = templates[(made + utt) % len(templates)]
            try:
                link(source, target)
            except OSError:
                link = shutil.copyfile  # no hard links here (another file system): copy
                link(source, target)
            lines.append(f"{utt_id} HELLO WORLD NUMBER {utt}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        made += len(lines)
        chapter_index += 1
    return split_dir


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the workers)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))  # fmt: skip
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    """Build the tree, time the preparation per worker count, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", default=None, help="build the tree here and keep it")
    args = parser.parse_args(argv)

    from data_prep.librispeech_prepare import prepare_librispeech

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prep_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        build_tree(root, args.files)
        build_s = time.perf_counter() - start
        print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}")
        print(f"built {args.files} files in {build_s:.1f} s under {root}", flush=True)
        rows, manifests = [], {}
        for run, workers in enumerate(args.workers):
            save = root / f"prep_{run}_{workers}"  # a fresh folder: idempotence must not skip
            load_before = load_average()
            cpu_before = cpu_seconds()
            start = time.perf_counter()
            csvs = prepare_librispeech(root, save, splits=[SPLIT], with_phonemes=False,
                                       num_workers=workers, progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            cpu = cpu_seconds() - cpu_before
            manifests[run] = csvs[SPLIT].read_bytes()
            rows.append((workers, seconds, cpu, load_before, load_average()))
            print(f"num_workers={workers}: {seconds:.1f} s", flush=True)
        first = manifests[0]
        identical = all(data == first for data in manifests.values())
        base = rows[0][1]
        print()
        print("| num_workers | files | wall-clock (s) | files/s | speed-up | CPU s (all processes) "
              "| load avg before -> after (1/5/15 min) |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---|")
        for workers, seconds, cpu, before, after in rows:
            print(f"| {workers} | {args.files} | {seconds:.1f} | {args.files / seconds:.0f} | "
                  f"{base / seconds:.2f} | {cpu:.1f} | {before} -> {after} |")  # fmt: skip
        print()
        print(f"manifests byte-identical across worker counts: {identical}")
        return 0 if identical else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
