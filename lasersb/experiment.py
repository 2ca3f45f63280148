"""Experiment set-up shared by every recipe's ``train.py``.

Keeps the scripts thin: parse the command line as SpeechBrain does, load the hyperparameters
(following ``inherit:``), create the output folder with the resolved hyperparameters, a log
file and ``environment.json`` (:mod:`lasersb.environment`), and pick run options that suit
the machine (mixed precision only on CUDA).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import logging
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.distributed import get_rank

from lasersb.config import load_hparams, resolve_hparams_text
from lasersb.distributed import share_cpu_threads, world_size
from lasersb.environment import write_environment

logger = logging.getLogger(__name__)


def resolve_run_opts(run_opts, hparams: dict):
    """Adapt run options to the machine: bf16/fp16 autocast is used on CUDA only.

    The hparams file keeps priority over SpeechBrain's defaults for every option not given on
    the command line (``max_grad_norm``, ``optimizer_step_limit``, ``ckpt_interval_steps``...):
    only the options the user typed, plus a device or precision changed here, are marked as
    overridden.

    Arguments
    ---------
    run_opts : speechbrain.utils.run_opts.RunOptions or dict
        Run options from ``speechbrain.parse_arguments`` (a dict counts as all typed).
    hparams : dict
        Loaded hyperparameters (may hold ``precision``).

    Returns
    -------
    RunOptions
        With ``device`` resolved, and ``precision`` set to ``fp32`` on a CPU device.

    Example
    -------
    >>> from speechbrain.utils.run_opts import RunOptions
    >>> _, opts, _ = RunOptions.from_command_line_args(["x.yaml", "--device=cpu"])
    >>> opts = resolve_run_opts(opts, {"precision": "bf16", "max_grad_norm": 1.0})
    >>> opts.precision, sorted(opts.overridden_args)
    ('fp32', ['device', 'precision'])
    >>> _, opts, _ = RunOptions.from_command_line_args(["x.yaml", "--optimizer_step_limit=5"])
    >>> resolve_run_opts(opts, {}).optimizer_step_limit
    5
    """
    from speechbrain.utils.distributed import infer_device
    from speechbrain.utils.run_opts import RunOptions

    if isinstance(run_opts, dict):
        run_opts = RunOptions.from_dictionary(run_opts)
    overridden = set(run_opts.overridden_args)
    changes = {}
    # SpeechBrain's parser leaves some numeric options as text ("--optimizer_step_limit=100").
    for field in dataclasses.fields(run_opts):
        value = getattr(run_opts, field.name)
        if isinstance(value, str) and any(t in str(field.type) for t in ("int", "float")):
            try:
                changes[field.name] = int(value) if "int" in str(field.type) else float(value)
            except ValueError:
                pass  # not a number ("None"...): SpeechBrain reports it
    device = run_opts.device or infer_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA requested but not available: running on the CPU.")
        device = "cpu"
    if device != run_opts.device:
        changes["device"] = device
        overridden.add("device")
    given = run_opts.precision if "precision" in overridden else None
    # A run option, not a recipe key: like sb.Brain, take it from the hparams file when the file
    # sets it, else SpeechBrain's default (fp32).
    precision = given or hparams.get("precision", "fp32")
    if not str(device).startswith("cuda") and precision != "fp32":
        logger.info("Precision %s requested; using fp32 on %s.", precision, device)
        changes["precision"] = "fp32"
        overridden.add("precision")
    return dataclasses.replace(run_opts, **changes, overridden_args=overridden)


def seed_rank(seed: int) -> int:
    """Give each DDP process its own random stream: seed ``seed + 1000 * rank``.

    SpeechBrain seeds every process alike (so that freshly built models are identical); call
    this after the modules are built so that on-the-fly draws (augmentation, dropout, crops)
    differ between processes. A no-op seed change on rank 0 and without DDP.

    Example
    -------
    >>> seed_rank(3)
    3
    """
    rank = int(get_rank() or 0)
    if rank == 0:
        return int(seed)
    seed = int(seed) + 1000 * rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def _destroy_process_group():
    """At exit: wait (briefly) for the other ranks, then tear the process group down.

    A rank that tore its group down while rank 0 was still writing results sometimes aborted
    ("terminate called without an active exception"); the barrier lines the exits up. It is
    bounded, so a rank whose peers crashed does not wait for them.
    """
    if not torch.distributed.is_initialized():
        return
    try:
        work = torch.distributed.barrier(async_op=True)
        work.wait(timeout=datetime.timedelta(seconds=60))
    except Exception as err:  # a peer is gone: nothing to line up with
        logger.debug("No exit barrier (%s)", err)
    torch.distributed.destroy_process_group()


def underscore_options(argv):
    """``argv`` with each option name spelt with underscores (``--lexicon-file`` ->
    ``--lexicon_file``), so that train.py takes both spellings, as ``python -m data_prep.*`` does.

    Only option names change; values (``--data_folder=/a-b``, ``/a-b``) stay as they are.

    Example
    -------
    >>> underscore_options(["x.yaml", "--lexicon-file=/d/a-b.txt", "--data_folder", "/d/x-y"])
    ['x.yaml', '--lexicon_file=/d/a-b.txt', '--data_folder', '/d/x-y']
    """
    spelled = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        spelled.append(arg)
    return spelled


def setup_experiment(argv):
    """Parse ``argv`` like a SpeechBrain recipe and prepare the experiment folder.

    Arguments
    ---------
    argv : list of str
        Command-line arguments: the hparams file, then ``--key=value`` overrides.

    Returns
    -------
    hparams : dict
        Loaded hyperparameters.
    run_opts : dict
        Run options (device, precision, distributed settings...).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(underscore_options(argv))
    sb.utils.distributed.ddp_init_group(run_opts)
    share_cpu_threads()  # several processes on one machine: numba threads shared out
    if torch.distributed.is_initialized():
        # Tear the process group down before the interpreter exits: gloo's threads otherwise
        # sometimes abort the finished process ("terminate called without an active exception").
        atexit.register(_destroy_process_group)
    hparams = load_hparams(hparams_file, overrides)
    run_opts = resolve_run_opts(run_opts, hparams)
    output_folder = Path(hparams["output_folder"])
    sb.create_experiment_directory(experiment_directory=str(output_folder))
    if sb.utils.distributed.if_main_process():
        script = Path(sys.argv[0])
        if script.suffix == ".py" and script.is_file():
            shutil.copy(script, output_folder / script.name)  # the recipe script that ran
        resolved = resolve_hparams_text(hparams_file, overrides)
        (output_folder / "hyperparams.yaml").write_text(resolved, encoding="utf-8")
        # Commit, library versions, device, checksums: what the run's numbers depend on.
        write_environment(
            output_folder,
            hparams_text=resolved,
            upstream_source=hparams.get("upstream_source"),
            device=run_opts.device,
            world_size=world_size(),
        )
    return hparams, run_opts
