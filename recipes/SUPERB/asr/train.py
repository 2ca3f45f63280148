#!/usr/bin/env python3
"""SUPERB ASR (character CTC, WER) on a frozen upstream.

Prepares the LibriSpeech manifests, trains a BiLSTM CTC head on the learnable weighted sum of
the frozen upstream's hidden layers (:class:`lasersb.brains.superb.SuperbCTCBrain`), selects
the checkpoint on dev-clean WER, then writes per-utterance hypotheses, alignments, per-split
JSON summaries and ``<output_folder>/results.json`` (read by ``python -m lasersb.report``).

Run from the repository root:
    python recipes/SUPERB/asr/train.py recipes/SUPERB/asr/hparams/asr.yaml \\
        --data_folder=/path/LibriSpeech --upstream_source=facebook/hubert-base-ls960
"""

import sys

from speechbrain.utils.distributed import run_on_main

from lasersb.brains.superb import (
    SuperbCTCBrain,
    attach_optional_components,
    prepare_superb_data,
    superb_datasets,
)
from lasersb.experiment import setup_experiment


def main(argv):
    """Prepare, train, select on dev, evaluate; returns the content of results.json."""
    hparams, run_opts = setup_experiment(argv)
    manifests = run_on_main(prepare_superb_data, kwargs={"hparams": hparams})
    data = superb_datasets(hparams, manifests)
    attach_optional_components(hparams)
    brain = SuperbCTCBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    # Resumes from the last checkpoint; with --test_only, only the evaluation runs.
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data["dev"],
        train_loader_kwargs=data["train_loader"],
        valid_loader_kwargs=data["eval_loader"],
    )
    if not hparams["evaluate_after_training"] and not run_opts.get("test_only"):
        return None
    return brain.evaluate_splits(data["eval"], loader_kwargs=data["eval_loader"])


if __name__ == "__main__":
    main(sys.argv[1:])
