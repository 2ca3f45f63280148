#!/usr/bin/env python3
"""ADReSS Alzheimer's detection by transfer of a DINO / x-vector embedding model.

Run from the repository root:

    python recipes/ADReSS/ad/train.py recipes/ADReSS/ad/hparams/ad.yaml \
        --data_folder=/data/ADReSS-IS2020-data \
        --embedding_checkpoint=results/dino/1986/embedding_model.ckpt

Trains on the challenge's training speakers (``cc`` = control, ``cd`` = dementia) and tests on
its test speakers (labels from ``test/meta_data_test.txt`` or ``--test_labels_file``).
Writes ``<output_folder>/results.json`` (accuracy, precision/recall/F1 of ``cd``, macro F1, UA,
confusion matrix), ``results.md`` and ``predictions.csv``. With ``--use_chunks=True`` the
normalised audio chunks are used and the test posteriors are averaged per subject. The
schedule, chunk lengths and augmentation are options of the hparams file.
"""

import csv
import json
import logging
import sys
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.adress_prepare import prepare_adress
from lasersb.brains.embedding_classifier import EmbeddingClassifierBrain
from lasersb.data.classification import classification_dataset
from lasersb.data.pipelines import dataloader_options
from lasersb.experiment import setup_experiment
from lasersb.metrics.classification import aggregate_posteriors, classification_report

logger = logging.getLogger(__name__)


def prepare(hparams):
    """Write the train/test manifests (main process only); return their paths.

    The corpus-specific part of the recipe (``data_prep/adress_prepare.py``): the full-wave
    recordings (or, with ``use_chunks``, the normalised chunks with their ``subject``) of the
    challenge's train and test speakers.
    """
    kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["manifest_folder"],
        "use_chunks": hparams["use_chunks"],
        "test_labels_file": hparams["test_labels_file"],
        "sample_rate": hparams["sample_rate"],
        "num_workers": hparams["prep_num_workers"],
    }
    return run_on_main(prepare_adress, kwargs=kwargs)  # the result reaches every process


def build_datasets(hparams, manifests):
    """Audio + class-index pipelines; the test set sorted by duration (less padding)."""
    classes, sample_rate = hparams["classes"], hparams["sample_rate"]
    return {
        "train": classification_dataset(manifests["train"], classes, sample_rate=sample_rate),
        "test": classification_dataset(
            manifests["test"], classes, sample_rate=sample_rate, sort="ascending"
        ),
    }


def subject_report(predictions, manifest, classes):
    """Metrics after averaging the posteriors of each subject's chunks."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        groups = {row["ID"]: row["subject"] for row in csv.DictReader(handle)}
    per_subject = aggregate_posteriors(predictions, groups)
    predicted = [max(range(len(p)), key=p.__getitem__) for p in per_subject["probs"]]
    return classification_report(per_subject["targets"], predicted, classes)


def markdown(results) -> str:
    """One-row Markdown table of the test scores."""
    header = "| Model | Schedule | Accuracy (%) | F1 cd (%) | Precision (%) | Recall (%) | UA (%) |"
    row = (
        f"| {results['embedding_source']} | {results['schedule']} | "
        f"{100 * results['accuracy']:.2f} | {100 * results['f1']:.2f} | "
        f"{100 * results['precision']:.2f} | {100 * results['recall']:.2f} | "
        f"{100 * results['ua']:.2f} |"
    )
    return "\n".join([header, "|---|---|---|---|---|---|---|", row])


def main(argv):
    """Prepare, fine-tune, test; see the module docstring. Returns the results dict."""
    hparams, run_opts = setup_experiment(argv)
    manifests = prepare(hparams)
    datasets = build_datasets(hparams, manifests)
    brain = EmbeddingClassifierBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(  # resumes from the last checkpoint
        hparams["epoch_counter"],
        datasets["train"],
        train_loader_kwargs=dataloader_options(
            datasets["train"],
            batch_size=hparams["batch_size"],
            shuffle=True,
            num_workers=hparams["num_workers"],
            seed=hparams["seed"],
        ),
    )
    report = brain.evaluate(
        datasets["test"],
        test_loader_kwargs=dataloader_options(
            datasets["test"], batch_size=hparams["eval_batch_size"]
        ),
    )
    if hparams["use_chunks"]:
        report = subject_report(brain.test_predictions, manifests["test"], hparams["classes"])
    results = {
        key: report[key] for key in ("accuracy", "f1", "precision", "recall", "macro_f1", "ua")
    }
    results["num_test_subjects"] = report["num_utterances"]
    results.update(
        {
            "schedule": hparams["schedule"],
            "chunk_seconds": hparams["chunk_seconds"],
            "eval_chunk_seconds": hparams["eval_chunk_seconds"],
            "embedding_source": hparams["embedding_model"].checkpoint_meta.get("source", "unknown"),
            "embedding_checkpoint": str(hparams["embedding_checkpoint"]),
            "use_chunks": hparams["use_chunks"],
            "report": report,
        }
    )
    output_folder = Path(hparams["output_folder"])
    if if_main_process():
        brain.save_predictions(output_folder / "predictions.csv")
        (output_folder / "results.json").write_text(json.dumps(results, indent=2), "utf-8")
        table = markdown(results)
        (output_folder / "results.md").write_text(
            f"ADReSS test set, Alzheimer's detection\n\n{table}\n", encoding="utf-8"
        )
        print(table)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
