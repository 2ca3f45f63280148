#!/usr/bin/env python3
"""Utterance-level DINO pre-training on VoxCeleb, then speaker verification with the teacher.

Run from the repository root:

    python recipes/VoxCeleb/dino/train.py recipes/VoxCeleb/dino/hparams/dino.yaml \
        --data_folder=/data/VoxCeleb1 --vox2_folder=/data/VoxCeleb2 \
        --musan_folder=/data/musan --rir_folder=/data/RIRS_NOISES/simulated_rirs

The script prepares the manifests (``data_prep/voxceleb_prepare.py``: VoxCeleb1/2 training
speakers minus the test speakers), trains the student/teacher pair without labels (no speaker
label is read), exports the teacher's trunk to ``<output_folder>/embedding_model.ckpt``
(:func:`lasersb.models.dino.load_embedding_model`) and, with ``score_after_training``, scores the
trial lists with cosine similarity (plain, mean-subtracted, AS-norm): EER, minDCF and a DET plot
in ``<output_folder>/eval/<trials>/``. A killed run resumes from its last checkpoint.
"""

import logging
import sys
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.voxceleb_prepare import prepare_voxceleb
from lasersb.brains.dino import DINOBrain
from lasersb.data.pipelines import dataloader_options
from lasersb.experiment import setup_experiment
from lasersb.speaker_scoring import cohort_from_manifest, evaluate_verification, speaker_dataset

logger = logging.getLogger(__name__)


def prepare(hparams):
    """Write the manifests and trial lists (main process only); return their paths."""
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
    }
    run_on_main(prepare_voxceleb, kwargs=kwargs)
    return prepare_voxceleb(**kwargs)


def score(brain, hparams, manifests):
    """Score every trial list with the exported embedding model."""
    cohort = cohort_from_manifest(manifests["train"], hparams["cohort_size"], hparams["seed"])
    results = {}
    for name, trials in manifests["trials"].items():
        results[name] = evaluate_verification(
            brain.embedding_model(),
            trials,
            Path(hparams["data_folder"]) / "wav",
            Path(hparams["eval_folder"]) / name,
            cohort_paths=cohort,
            device=brain.device,
            snorm_top_n=hparams["snorm_top_n"],
            batch_size=hparams["eval_batch_size"],
            max_seconds=hparams["eval_max_seconds"],
            sample_rate=hparams["sample_rate"],
            name="DINO",
        )
    return results


def main(argv):
    """Prepare, pre-train, export, score; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    manifests = prepare(hparams)
    train_data = speaker_dataset(
        manifests["train"],
        segment_seconds=hparams["segment_seconds"],
        sample_rate=hparams["sample_rate"],
    )
    brain = DINOBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    loader = dataloader_options(
        train_data,
        batch_size=hparams["batch_size"],
        shuffle=True,
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
    )
    loader["drop_last"] = len(train_data) > hparams["batch_size"]
    brain.fit(hparams["epoch_counter"], train_data, train_loader_kwargs=loader)
    brain.export_embedding_model(hparams["output_folder"])
    if hparams["score_after_training"] and if_main_process():
        score(brain, hparams, manifests)
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
