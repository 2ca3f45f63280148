#!/usr/bin/env python3
"""Supervised x-vector baseline on VoxCeleb: the DINO trunk trained with speaker labels.

Run from the repository root:

    python recipes/VoxCeleb/xvector/train.py recipes/VoxCeleb/xvector/hparams/xvector.yaml \
        --data_folder=/data/VoxCeleb1 --vox2_folder=/data/VoxCeleb2 --musan_folder=/data/musan

The script prepares the manifests (``data_prep/voxceleb_prepare.py``), trains the light
ResNet-34 trunk with an AAM-softmax speaker classifier on random segments (validated on
held-out utterances of the training speakers), exports the trunk to
``<output_folder>/embedding_model.ckpt`` and, with ``score_after_training``, scores the trial
lists exactly as the DINO recipe does (``<output_folder>/eval/<trials>/``). A killed run
resumes from its last checkpoint.
``--prepare_only=True`` stops after the manifests (run.sh stage 1); ``--score_only=True`` scores
the trial lists with the exported ``embedding_model.ckpt`` and the same hparams (stage 3).
"""

import logging
import sys
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.voxceleb_prepare import prepare_voxceleb
from lasersb.brains.xvector import XvectorBrain
from lasersb.data.pipelines import dataloader_options
from lasersb.data.speakers import speaker_dataset, speaker_label_encoder, speaker_train_loader
from lasersb.experiment import setup_experiment
from lasersb.metrics.trial_scoring import score_embedding_export, score_trial_lists

logger = logging.getLogger(__name__)


def prepare(hparams):
    """Write the manifests and trial lists (main process only); return their paths.

    The corpus-specific part of the recipe: ``data_prep/voxceleb_prepare.py`` (VoxCeleb1/2
    training speakers minus the test speakers, a ``dev_fraction`` of held-out utterances).
    """
    kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["manifest_folder"],
        "vox2_folder": hparams["vox2_folder"],
        "trial_lists": hparams["trial_lists"],
        "meta_file": hparams["meta_file"],
        "use_vox1_dev": hparams["use_vox1_dev"],
        "dev_fraction": hparams["dev_fraction"],
        "min_duration": hparams["min_duration"],
        "convert_m4a": hparams["convert_m4a"],
        "skip_bad_files": hparams["skip_bad_files"],
        "num_workers": hparams["prep_num_workers"],
        "vad": hparams["vad"] if hparams["energy_vad"] else None,
    }
    return run_on_main(prepare_voxceleb, kwargs=kwargs)  # the result reaches every process


def main(argv):
    """Prepare, train, export, score; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    manifests = prepare(hparams)
    if hparams["prepare_only"]:  # run.sh stage 1
        return None
    if hparams["score_only"]:  # run.sh stage 3: the exported trunk, scored with these hparams
        run_on_main(score_embedding_export, args=[hparams, manifests, run_opts.device, "x-vector"])
        return None
    label_file = Path(hparams["save_folder"]) / "speaker_encoder.txt"
    encoder = run_on_main(speaker_label_encoder, args=[manifests["train"], label_file])
    datasets = {
        name: speaker_dataset(
            manifests[name],
            segment_seconds=hparams["segment_seconds"],
            sample_rate=hparams["sample_rate"],
            label_encoder=encoder,
            speech_only=hparams["energy_vad"],  # non-speech removed before the chunks (hyperion)
        )
        for name in ("train", "dev")
    }
    classifier = hparams["classifier"](out_neurons=len(encoder))
    modules = {"embedding_model": hparams["embedding_model"], "classifier": classifier}
    hparams["checkpointer"].add_recoverable("classifier", classifier)
    brain = XvectorBrain(
        modules=modules,
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_opts = speaker_train_loader(datasets["train"], hparams)
    valid = datasets["dev"] if len(datasets["dev"]) else None
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        valid,
        train_loader_kwargs=train_opts,
        valid_loader_kwargs=dataloader_options(
            datasets["dev"], batch_size=hparams["batch_size"], num_workers=hparams["num_workers"]
        ),
    )
    brain.export_embedding_model(hparams["output_folder"])
    if hparams["score_after_training"] and if_main_process():
        score_trial_lists(
            brain.embedding_model(), hparams, manifests, device=brain.device, name="x-vector"
        )
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
