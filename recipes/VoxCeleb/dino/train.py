#!/usr/bin/env python3
"""Utterance-level DINO pre-training on VoxCeleb, then speaker verification with the teacher.

Run from the repository root:

    python recipes/VoxCeleb/dino/train.py recipes/VoxCeleb/dino/hparams/dino.yaml \
        --data_folder=/data/VoxCeleb1 --vox2_folder=/data/VoxCeleb2 \
        --musan_folder=/data/musan --rir_folder=/data/RIRS_NOISES/simulated_rirs

The script prepares the manifests (``data_prep/voxceleb_prepare.py``: VoxCeleb1/2 training
speakers minus the test speakers, with hyperion's energy VAD of the training audio when
``energy_vad``: the speech segments of each file, utterances with less than ``min_duration``
seconds of speech left out), trains the student/teacher pair without labels (no speaker
label is read), exports the teacher's trunk to ``<output_folder>/embedding_model.ckpt``
(:func:`lasersb.models.dino.load_embedding_model`) and, with ``score_after_training``, scores the
trial lists with cosine similarity (plain, mean-subtracted, AS-norm): EER, minDCF and a DET plot
in ``<output_folder>/eval/<trials>/``. A killed run resumes from its last checkpoint.
``--prepare_only=True`` stops after the manifests (run.sh stage 1); ``--score_only=True`` scores
the trial lists with the exported ``embedding_model.ckpt`` and the same hparams (stage 3).
"""

import logging
import sys

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.voxceleb_prepare import prepare_voxceleb
from lasersb.brains.dino import DINOBrain
from lasersb.data.speakers import speaker_dataset, speaker_train_loader
from lasersb.experiment import setup_experiment
from lasersb.metrics.trial_scoring import score_embedding_export, score_trial_lists

logger = logging.getLogger(__name__)


def prepare(hparams):
    """Write the manifests and trial lists (main process only); return their paths.

    The corpus-specific part of the recipe: ``data_prep/voxceleb_prepare.py`` (VoxCeleb1/2
    training speakers minus the test speakers, a ``dev_fraction`` of held-out utterances, the
    energy VAD's speech segments when ``energy_vad``).
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
    """Prepare, pre-train, export, score; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    manifests = prepare(hparams)
    if hparams["prepare_only"]:  # run.sh stage 1
        return None
    if hparams["score_only"]:  # run.sh stage 3: the exported trunk, scored with these hparams
        run_on_main(score_embedding_export, args=[hparams, manifests, run_opts.device, "DINO"])
        return None
    train_data = speaker_dataset(
        manifests["train"],
        segment_seconds=hparams["segment_seconds"],
        sample_rate=hparams["sample_rate"],
        speech_only=hparams["energy_vad"],  # non-speech removed before the crops (hyperion)
    )
    brain = DINOBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    loader = speaker_train_loader(train_data, hparams)
    brain.fit(hparams["epoch_counter"], train_data, train_loader_kwargs=loader)
    brain.export_embedding_model(hparams["output_folder"])
    if hparams["score_after_training"] and if_main_process():
        score_trial_lists(
            brain.embedding_model(), hparams, manifests, device=brain.device, name="DINO"
        )
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
