#!/usr/bin/env python3
"""TEMPLATE recipe: speaker identification over a frozen SSL upstream (copy me for a new corpus).

Run from the repository root:

    python recipes/TEMPLATE/train.py recipes/TEMPLATE/hparams/template.yaml \
        --data_folder=/path/LibriSpeech

The five steps every recipe here follows, each a few lines:

1. ``setup_experiment``: parse ``<hparams> --key=value``, follow ``inherit:``, create the output
   folder (hyperparams.yaml, this script, the log).
2. ``run_on_main(prepare_...)``: write the standard manifests (CSV: ``ID,duration,wav,...``)
   on the main process only; every other process waits, then reads them.
3. Datasets from ``lasersb.data.pipelines.audio_dataset`` plus the label pipeline of the task.
4. The Brain from ``lasersb.brains`` (here
   :class:`~lasersb.brains.frozen_upstream_classifier.UtteranceClassifierBrain`).
5. ``fit`` then ``evaluate`` on the best checkpoint. Re-running the same command after a kill
   resumes from the last checkpoint.

For a new corpus change only ``build_manifests`` (call your ``data_prep/<corpus>_prepare.py``)
and the hparams; see README.md next to this file.
"""

import logging
import sys
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.librispeech_prepare import prepare_librispeech
from lasersb.brains.frozen_upstream_classifier import UtteranceClassifierBrain
from lasersb.data.pipelines import audio_dataset, dataloader_options
from lasersb.experiment import setup_experiment

logger = logging.getLogger(__name__)


def build_manifests(hparams):
    """Step 2: write the manifests (main process only); return the CSV of each set.

    The corpus-specific part of the recipe. LibriSpeech speakers are disjoint between splits,
    so for speaker identification the train, valid and test sets are all drawn from
    ``train_split`` by utterance index (see :func:`split_by_index`).
    """
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "splits": [hparams["train_split"]],
            "with_phonemes": False,
            "skip_bad_files": hparams["skip_bad_files"],
            "min_samples": hparams["min_samples"],
            "num_workers": hparams["prep_num_workers"],
        },
    )
    csv = Path(hparams["manifest_folder"]) / f"{hparams['train_split']}.csv"
    return {"train": csv, "valid": csv, "test": csv}


def split_by_index(dataset, name, every):
    """Utterance ``i`` goes to valid if ``i % every == 1``, to test if ``== 2``, else to train."""
    parts = {"valid": {1}, "test": {2}, "train": set(range(every)) - {1, 2}}[name]
    keep = {uid for i, uid in enumerate(dataset.data_ids) if i % every in parts}
    return dataset.filtered_sorted(key_test={"id": lambda uid: uid in keep})


def build_datasets(hparams):
    """Step 3: audio + label pipelines; the label encoder is fitted on train and saved."""
    csvs = build_manifests(hparams)
    datasets = {}
    for name, csv in csvs.items():
        data = audio_dataset(
            csv,
            sample_rate=hparams["sample_rate"],
            min_duration=hparams["min_duration"],
            min_samples=hparams["min_samples"],
        )
        datasets[name] = split_by_index(data, name, hparams["split_every"])

    encoder = hparams["label_encoder"]

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("label_encoded")
    def label_pipeline(label):
        return encoder.encode_sequence_torch([label])

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), label_pipeline)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig", "label_encoded"])
    run_on_main(
        encoder.load_or_create,
        kwargs={
            "path": hparams["label_encoder_file"],
            "from_didatasets": [datasets["train"]],
            "output_key": "spk_id",
        },
    )
    if not if_main_process():
        encoder.load(hparams["label_encoder_file"])  # written by the main process
    if len(encoder) > hparams["num_classes"]:
        raise ValueError(
            f"{len(encoder)} classes in the training data but num_classes={hparams['num_classes']} "
            f"in the hparams file; set --num_classes={len(encoder)} (or larger)."
        )
    return datasets


def main(argv):
    """Prepare, train, evaluate; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)  # step 1
    datasets = build_datasets(hparams)
    brain = UtteranceClassifierBrain(  # step 4
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(  # step 5
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=dataloader_options(
            datasets["train"], hparams["batch_size"], shuffle=True, seed=hparams["seed"]
        ),
        valid_loader_kwargs=dataloader_options(datasets["valid"], hparams["batch_size"]),
    )
    brain.evaluate(
        datasets["test"],
        min_key="error_rate",
        test_loader_kwargs=dataloader_options(datasets["test"], hparams["batch_size"]),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
