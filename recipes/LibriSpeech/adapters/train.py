#!/usr/bin/env python3
"""CTC ASR with adapters (or full / frozen fine-tuning) on a wav2vec 2.0 / HuBERT / WavLM encoder.

Prepares the manifests (Libri-light 10 h, LibriSpeech train-clean-100 or Common Voice), trains
(or loads) the tokenizer, fine-tunes with :class:`lasersb.brains.adapter_ctc.AdapterCTCBrain`
(selecting the checkpoint on dev WER), then writes WER/CER per evaluation split,
``results.json`` with the parameter accounting, and the adapter-only checkpoint ``adapters.pt``.

Run from the repository root:
    python recipes/LibriSpeech/adapters/train.py \\
        recipes/LibriSpeech/adapters/hparams/adapters_top.yaml \\
        --librilight_folder=/data/librispeech_finetuning --data_folder=/data/LibriSpeech
"""

import sys

import torch
import yaml
from speechbrain.utils.distributed import run_on_main

from lasersb.brains.adapter_ctc import AdapterCTCBrain, fit_tokenizer, prepare_adapter_asr_data
from lasersb.brains.superb import superb_datasets
from lasersb.experiment import setup_experiment


def explicit_run_opts(run_opts, argv=()):
    """The run options typed on the command line (typed values), plus the device and precision.

    Given to ``sb.Brain`` as a dict, these are exactly the options that override the hparams
    file, so ``optimizer_step_limit``, ``ckpt_interval_minutes``... of the hparams file are
    kept. Also turns values SpeechBrain's parser leaves as strings
    (``--optimizer_step_limit=100``) into numbers, and an unset device into the available one.
    Accepts SpeechBrain's ``RunOptions`` or a dict (then only the keys also typed in ``argv``
    are kept).
    """
    if isinstance(run_opts, dict):
        typed = {arg[2:].split("=")[0] for arg in argv if arg.startswith("--")}
        values = dict(run_opts)
    else:
        typed = set(getattr(run_opts, "overridden_args", ()))
        values = {key: getattr(run_opts, key) for key in typed | {"device", "precision"}}
    kept = {
        key: yaml.safe_load(value) if isinstance(value, str) and key != "device" else value
        for key, value in values.items()
        if key in typed
    }
    device = values.get("device")
    if device in (None, "None"):
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    kept["device"] = device
    kept["precision"] = values.get("precision") or "fp32"
    return kept


def run(argv):
    """Prepare, train, select on dev, evaluate; returns ``(brain, content of results.json)``."""
    hparams, run_opts = setup_experiment(argv)
    run_opts = explicit_run_opts(run_opts, argv)
    manifests = run_on_main(prepare_adapter_asr_data, kwargs={"hparams": hparams})
    run_on_main(fit_tokenizer, kwargs={"hparams": hparams, "manifests": manifests})
    fit_tokenizer(hparams, manifests)  # loads the model trained on the main process
    data = superb_datasets(hparams, manifests)
    brain = AdapterCTCBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    before = None
    if hparams["evaluate_before_training"]:
        before = brain.evaluate_splits(data["eval"], data["eval_loader"], write_results=False)
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data["dev"],
        train_loader_kwargs=data["train_loader"],
        valid_loader_kwargs=data["eval_loader"],
    )
    trained = {"trained_steps": int(brain.optimizer_step)}
    results = brain.evaluate_splits(data["eval"], data["eval_loader"], before=before, extra=trained)
    return brain, results


def main(argv):
    """Command-line entry point; returns the content of results.json."""
    return run(argv)[1]


if __name__ == "__main__":
    main(sys.argv[1:])
