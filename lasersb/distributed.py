"""Distributed (torchrun / DDP) helpers shared by every Brain and recipe.

SpeechBrain starts the process group (``ddp_init_group``), runs data preparation on the main
process (``run_on_main``) and wraps trainable modules in ``DistributedDataParallel``. What it
leaves to the recipe is collected here: reaching a module through its wrapper (:func:`unwrap`),
the job's rank and size, gathering per-rank results (:func:`gather_objects`), and the
``DistributedDataParallel`` options lasersb's modules need (:func:`wrap_ddp`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["gather_objects", "rank", "share_cpu_threads", "unwrap", "world_size", "wrap_ddp"]


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, or ``module``.

    Attributes (``layer_weights``, ``model``, ``head``...) and rank-0-only computations (plots,
    exports, diagnostics) use the unwrapped module: calling a DDP wrapper on one rank only
    starts collectives (buffer broadcast, bucket rebuild) the other ranks never join.

    Example
    -------
    >>> layer = torch.nn.Linear(2, 2)
    >>> unwrap(torch.nn.DataParallel(layer)) is layer, unwrap(layer) is layer
    (True, True)
    """
    while isinstance(module, (DistributedDataParallel, DataParallel)):
        module = module.module
    return module


def rank() -> int:
    """This process's rank in the job (0 without a process group).

    Example
    -------
    >>> rank()
    0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the job (1 without a process group).

    Example
    -------
    >>> world_size()
    1
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without DDP.

    Example
    -------
    >>> gather_objects({"utt1": 0.5})
    [{'utt1': 0.5}]
    """
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(
    module: nn.Module,
    device,
    find_unused_parameters: bool = False,
    sync_batchnorm: bool = True,
) -> nn.Module:
    """Wrap a module with trainable parameters in ``DistributedDataParallel``.

    ``SyncBatchNorm`` only works on CUDA, so batch norms are converted only there (on the CPU,
    with gloo, each process keeps its own statistics and DDP broadcasts rank 0's buffers at
    every forward). DDP only registers parameters that require gradients when it is built, so
    a frozen upstream costs no communication; ``find_unused_parameters`` is needed only where
    some trainable parameters take no part in a step (a data-dependent branch), because it
    costs a graph traversal per step.

    Arguments
    ---------
    module : torch.nn.Module
        The module (on ``device``).
    device : str or torch.device
        The process's device (``cuda:N`` or ``cpu``).
    find_unused_parameters : bool
        Passed to ``DistributedDataParallel``.
    sync_batchnorm : bool
        Convert batch norms to ``SyncBatchNorm`` on CUDA.

    Returns
    -------
    torch.nn.Module
        The wrapped module (the module itself without a process group).
    """
    if world_size() == 1 and not (dist.is_available() and dist.is_initialized()):
        return module
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(
        module,
        device_ids=[torch.device(device)] if on_cuda else None,
        find_unused_parameters=find_unused_parameters,
    )


def share_cpu_threads() -> int | None:
    """Give each of the processes on this machine its share of numba's CPU threads.

    torchrun sets ``OMP_NUM_THREADS=1`` for the PyTorch threads of each of its workers, but
    numba (the CPU soft-DTW and DTW kernels) still starts one thread per core in every process:
    with two processes on two cores a mini SE soft-DTW job took 25.7 s instead of 10.1 s
    (measured; 9.8 s with this). Without torchrun, or when ``NUMBA_NUM_THREADS`` is set, nothing
    changes.

    Returns
    -------
    int or None
        The number of numba threads of this process, ``None`` when left alone.

    Example
    -------
    >>> share_cpu_threads() is None  # one process
    True
    """
    import os
    import sys

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local <= 1 or "NUMBA_NUM_THREADS" in os.environ:
        return None
    threads = max(1, (os.cpu_count() or 1) // local)
    if "numba" in sys.modules:  # already started: fewer threads for the next parallel regions
        sys.modules["numba"].set_num_threads(threads)
    else:  # read by numba when it is first imported (a smaller thread pool, measured faster)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    return threads
