"""Experiment set-up shared by every recipe's ``train.py``.

Keeps the scripts thin: parse the command line as SpeechBrain does, load the hyperparameters
(following ``inherit:``), create the output folder with the resolved hyperparameters and a log
file, and pick run options that suit the machine (mixed precision only on CUDA).
"""

from __future__ import annotations

import logging
from pathlib import Path

import speechbrain as sb
import torch

from lasersb.config import load_hparams, resolve_hparams_text

logger = logging.getLogger(__name__)


def resolve_run_opts(run_opts: dict, hparams: dict) -> dict:
    """Adapt run options to the machine: bf16/fp16 autocast is used on CUDA only.

    Arguments
    ---------
    run_opts : dict
        Run options from ``speechbrain.parse_arguments``.
    hparams : dict
        Loaded hyperparameters (may hold ``precision``).

    Returns
    -------
    dict
        The run options, with ``precision`` set to ``fp32`` on a CPU device.

    Example
    -------
    >>> resolve_run_opts({"device": "cpu"}, {"precision": "bf16"})["precision"]
    'fp32'
    >>> resolve_run_opts({"device": "cpu", "precision": "fp16"}, {})["precision"]
    'fp32'
    """
    run_opts = dict(run_opts)
    device = str(run_opts.get("device", "cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA requested but not available: running on the CPU.")
        device = "cpu"
    run_opts["device"] = device
    precision = run_opts.get("precision", hparams.get("precision", "fp32"))
    if not device.startswith("cuda") and precision != "fp32":
        logger.info("Precision %s requested; using fp32 on %s.", precision, device)
        precision = "fp32"
    run_opts["precision"] = precision
    return run_opts


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
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    run_opts = resolve_run_opts(run_opts, hparams)
    output_folder = Path(hparams["output_folder"])
    sb.create_experiment_directory(experiment_directory=str(output_folder))
    if sb.utils.distributed.if_main_process():
        (output_folder / "hyperparams.yaml").write_text(
            resolve_hparams_text(hparams_file, overrides), encoding="utf-8"
        )
    return hparams, run_opts
