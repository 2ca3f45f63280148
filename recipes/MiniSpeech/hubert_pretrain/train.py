#!/usr/bin/env python3
"""HuBERT pretraining, first iteration (MFCC k-means targets), on a LibriSpeech-layout corpus.

Run from the repository root:

    python recipes/MiniSpeech/hubert_pretrain/train.py \
        recipes/MiniSpeech/hubert_pretrain/hparams/hubert_iter1.yaml \
        --data_folder=<MiniSpeech root>/LibriSpeech

The script prepares the manifests, computes the targets once (39-dim MFCC frames of every
training and dev utterance, k-means with ``n_clusters`` clusters fitted on the training frames,
one label per upstream frame; ``targets_file``), pretrains a tiny ``HubertModel`` by masked
prediction (:class:`~lasersb.brains.hubert_pretrain.HubertPretrainBrain`) and exports the
encoder with ``save_pretrained`` to ``export_folder``, a folder that every recipe's
``--upstream_source`` loads like ``facebook/hubert-base-ls960``. A killed run resumes from its
last checkpoint when the same command is run again; ``pretrain_summary.json`` ends the run.
"""

import json
import logging
import sys
import time
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.librispeech_prepare import prepare_librispeech
from lasersb.data.hubert_targets import (
    frame_targets,
    learn_kmeans,
    mfcc_features,
    read_targets,
    write_targets,
)
from lasersb.data.pipelines import audio_dataset, dataloader_options
from lasersb.experiment import setup_experiment

logger = logging.getLogger(__name__)


def build_datasets(hparams):
    """Prepare the manifests (main process only) and build the train and dev datasets."""
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "splits": list(hparams["train_splits"]) + list(hparams["valid_splits"]),
            "lexicon_file": None,
            "with_phonemes": False,
            "skip_bad_files": hparams["skip_bad_files"],
            "num_workers": hparams["prep_num_workers"],
        },
    )
    manifests = Path(hparams["manifest_folder"])
    datasets = {}
    for name in ("train", "valid"):
        datasets[name] = [
            audio_dataset(
                manifests / f"{split}.csv",
                sample_rate=hparams["sample_rate"],
                min_duration=hparams["min_duration"],
            )
            for split in hparams[f"{name}_splits"]
        ]
    return datasets


def compute_targets(hparams, datasets):
    """MFCC k-means labels of every utterance, written once to ``targets_file``."""
    out = Path(hparams["targets_file"])
    if out.is_file():
        logger.info("HuBERT targets already computed: %s", out)
        return
    start = time.time()
    features = {}
    for name in ("train", "valid"):
        for dataset in datasets[name]:
            with dataset.output_keys_as(["id", "sig"]):
                for item in dataset:
                    features[item["id"]] = (
                        name,
                        mfcc_features(item["sig"], hparams["sample_rate"]),
                    )
    train_features = [feats for name, feats in features.values() if name == "train"]
    kmeans = learn_kmeans(
        train_features,
        n_clusters=hparams["n_clusters"],
        percent=hparams["kmeans_percent"],
        seed=hparams["kmeans_seed"],
    )
    targets = {uid: frame_targets(kmeans, feats) for uid, (_, feats) in features.items()}
    write_targets(out, targets, hparams["n_clusters"])
    logger.info(
        "HuBERT targets: %d utterances, k-means %d clusters on %d training utterances "
        "(%.0f s), written to %s",
        len(targets),
        hparams["n_clusters"],
        len(train_features),
        time.time() - start,
        out,
    )


def concat(datasets):
    """One dataset from several splits' (``torch.utils.data.ConcatDataset`` when needed)."""
    if len(datasets) == 1:
        return datasets[0]
    import torch

    return torch.utils.data.ConcatDataset(datasets)


def main(argv):
    """Targets, pretraining, export; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    datasets = build_datasets(hparams)
    run_on_main(compute_targets, args=[hparams, datasets])
    targets, n_clusters = read_targets(hparams["targets_file"])
    if n_clusters != hparams["n_clusters"]:
        raise ValueError(
            f"{hparams['targets_file']} holds {n_clusters}-cluster targets but n_clusters is "
            f"{hparams['n_clusters']}; delete the file or point targets_file elsewhere."
        )
    hparams["targets"] = targets

    from lasersb.brains.hubert_pretrain import HubertPretrainBrain

    brain = HubertPretrainBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    train_data, valid_data = concat(datasets["train"]), concat(datasets["valid"])
    start = time.time()
    brain.fit(
        hparams["epoch_counter"],
        train_data,
        valid_data,
        train_loader_kwargs=dataloader_options(
            train_data,
            batch_size=hparams["batch_size"],
            shuffle=True,
            num_workers=hparams["num_workers"],
            seed=hparams["seed"],
        ),
        valid_loader_kwargs=dataloader_options(
            valid_data, batch_size=hparams["valid_batch_size"], num_workers=hparams["num_workers"]
        ),
    )
    info = {
        "method": "HuBERT pretraining, iteration 1 (MFCC k-means targets)",
        "recipe": "recipes/MiniSpeech/hubert_pretrain",
        "data_folder": str(hparams["data_folder"]),
        "optimizer_steps": int(brain.optimizer_step),
        "n_clusters": int(hparams["n_clusters"]),
        "seed": int(hparams["seed"]),
        "valid": getattr(brain, "valid_stats", None),
    }
    export = brain.export_upstream(hparams["export_folder"], info)
    if if_main_process():
        summary = dict(
            info,
            train=getattr(brain, "train_stats", None),
            export_folder=str(export),
            wall_time_s=round(time.time() - start, 1),
            device=str(brain.device),
        )
        out = Path(hparams["output_folder"]) / "pretrain_summary.json"
        out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        logger.info("Pretraining summary written to %s", out)


if __name__ == "__main__":
    main(sys.argv[1:])
