"""The SUPERB feature cache filled by several processes at once (as DDP ranks fill it).

Two processes write and read the same entries as fast as they can; every load must be a miss or
the whole tensor, never a torn file, and no temporary file may be left behind.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import torch

from lasersb.data.feature_cache import FeatureCache

KEYS = 12


def _entry(index: int) -> torch.Tensor:
    return torch.arange(4 * 200 * 16, dtype=torch.float32).reshape(4, 200, 16) + index


def _hammer(root: str, wav_dir: str, worker: int, rounds: int, queue) -> None:
    cache = FeatureCache(root, "upstream", dtype=None)
    bad = []
    for step in range(rounds):
        for index in range(KEYS):
            wav = Path(wav_dir) / f"u{index}.wav"
            if (index + step + worker) % 2:
                cache.save(f"u{index}", wav, _entry(index))
            loaded = cache.load(f"u{index}", wav)
            if loaded is not None and not torch.equal(loaded, _entry(index)):
                bad.append(index)
    queue.put((cache.hits, bad))


def test_two_processes_fill_the_cache_without_torn_entries(tmp_path):
    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    for index in range(KEYS):
        (wav_dir / f"u{index}.wav").write_bytes(b"RIFF" + bytes([index]))
    context = mp.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_hammer, args=(str(tmp_path / "cache"), str(wav_dir), w, 15, queue))
        for w in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert all(not bad for _, bad in results), results
    assert sum(hits for hits, _ in results) > KEYS  # the processes read each other's entries
    assert not list((tmp_path / "cache").rglob("*.tmp")), "temporary files left behind"
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == KEYS
