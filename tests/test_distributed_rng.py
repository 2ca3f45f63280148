"""Per-rank random streams under DDP, as lasersb/brains/base.py and lasersb/checkpoints.py state.

* ``seed_rank(seed)`` (called by every Brain at the start of ``fit``): rank ``r`` draws from
  ``seed + 1000 * r`` (Python, NumPy and torch), rank 0 keeps ``seed``, so that on-the-fly
  augmentation differs between processes while freshly built models are identical;
* ``RandomState`` (in every resumable recipe's checkpointer): the RNG states of *every* rank are
  saved (one file, rank order) and each rank restores its own, so a resumed job draws what an
  uninterrupted one would; a rank the file has no state for starts ``initial seed + 1000 * rank``.

Two real gloo processes (forked, a file rendezvous), a few seconds.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lasersb.checkpoints import RandomState
from lasersb.experiment import seed_rank

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo not built")

SEED = 1234


def _draws():
    return (random.random(), float(np.random.rand()), torch.rand(4))


def _worker(rank, world, store, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        record = {}
        torch.manual_seed(SEED)  # SpeechBrain seeds every process alike
        random.seed(SEED)
        np.random.seed(SEED)
        record["model_init"] = torch.rand(4)  # e.g. a freshly built model's weights
        record["seed"] = seed_rank(SEED)
        record["after_seed_rank"] = _draws()
        # The checkpoint of every rank's RNG state, then what each rank draws next.
        rng = RandomState()
        path = f"{out}/rng.ckpt"
        rng._save(path)
        dist.barrier()
        record["next"] = _draws()
        _draws()  # the run goes on (and would be killed here)
        rng._recover(path)  # a resumed job
        record["resumed"] = _draws()
        # A job resumed with more ranks than were saved: a one-rank file.
        one_rank = f"{out}/rng_one_rank.ckpt"
        if rank == 0:
            states = torch.load(path, weights_only=True)["per_rank"]
            torch.save({"per_rank": states[:1]}, one_rank)
        dist.barrier()
        torch.manual_seed(SEED)
        rng._recover(one_rank)
        record["initial_seed"] = torch.initial_seed()
        record["fresh"] = torch.rand(4)
        torch.save(record, f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("rng")
    # fork: the children inherit the imports (CPU only, no CUDA state to break)
    mp.start_processes(
        _worker, args=(2, str(out / "store"), str(out)), nprocs=2, start_method="fork"
    )
    saved = torch.load(out / "rng.ckpt", weights_only=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)], saved


def _expected_draws(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return _draws()


def _same(a, b):
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_seed_rank_gives_rank_r_the_stream_of_seed_plus_1000_r(ranks):
    (rank0, rank1), _ = ranks
    assert torch.equal(rank0["model_init"], rank1["model_init"])  # models built alike
    assert (rank0["seed"], rank1["seed"]) == (SEED, SEED + 1000)
    # rank 1 draws exactly from seed + 1000 (Python, NumPy, torch); rank 0 goes on from SEED.
    assert _same(rank1["after_seed_rank"], _expected_draws(SEED + 1000))
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.rand(4)
    assert _same(
        rank0["after_seed_rank"], (random.random(), float(np.random.rand()), torch.rand(4))
    )
    assert not torch.equal(rank0["after_seed_rank"][2], rank1["after_seed_rank"][2])


def test_rng_checkpoint_holds_every_rank_and_each_restores_its_own(ranks):
    (rank0, rank1), saved = ranks
    assert len(saved["per_rank"]) == 2
    assert not torch.equal(saved["per_rank"][0]["torch"], saved["per_rank"][1]["torch"])
    for record in (rank0, rank1):  # the resumed draws are the ones after the checkpoint
        assert _same(record["resumed"], record["next"])
    assert not torch.equal(rank0["resumed"][2], rank1["resumed"][2])  # each its own stream


def test_rank_without_a_saved_state_starts_seed_plus_1000_rank(ranks):
    (rank0, rank1), _ = ranks
    # rank 1 restored rank 0's state (seed SEED), then reseeded itself SEED + 1000
    assert rank1["initial_seed"] == SEED + 1000
    torch.manual_seed(SEED + 1000)
    assert torch.equal(rank1["fresh"], torch.rand(4))
    assert not torch.equal(rank0["fresh"], rank1["fresh"])
