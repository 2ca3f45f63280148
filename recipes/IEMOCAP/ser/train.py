#!/usr/bin/env python3
"""IEMOCAP 4-class emotion recognition by transfer of a DINO / x-vector embedding model.

Run from the repository root:

    python recipes/IEMOCAP/ser/train.py recipes/IEMOCAP/ser/hparams/ser.yaml \
        --data_folder=/data/IEMOCAP_full_release \
        --embedding_checkpoint=results/dino/1986/embedding_model.ckpt [--fold=3]

Leave-one-session-out cross-validation: fold ``k`` trains on the four other sessions and tests
on session ``k`` (``--fold=all``, the default, runs the five folds in turn). Each fold writes
``<output_folder>/fold<k>/results.json`` (UA, WA, macro F1, confusion matrix) and
``predictions.csv``; a fold whose ``results.json`` exists is not run again. At the end the
folds found are aggregated into ``<output_folder>/results.json`` and the Markdown table
``<output_folder>/results.md`` (UA/WA per fold, mean ± std); ``--aggregate_only=True`` only
does that. The schedule (``--schedule=two_stage|single_stage``), chunk length
(``--chunk_seconds``) and augmentation (``--noise_prob``, ``--reverb_prob``, noise folders) are
options of the hparams file.
"""

import json
import logging
import sys
from pathlib import Path

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.iemocap_prepare import prepare_iemocap
from lasersb.brains.embedding_classifier import EmbeddingClassifierBrain
from lasersb.config import hparam_value
from lasersb.data.classification import classification_dataset
from lasersb.data.pipelines import dataloader_options
from lasersb.experiment import setup_experiment
from lasersb.metrics.classification import folds_markdown_table, summarise_folds

logger = logging.getLogger(__name__)

FOLDS = (1, 2, 3, 4, 5)
RESULTS = "results.json"


def prepare(hparams):
    """Write the per-session / per-fold manifests (main process only); return their paths.

    The corpus-specific part of the recipe (``data_prep/iemocap_prepare.py``): the utterances
    of the four emotions (``excited`` merged into ``happy`` with ``merge_excited``), one
    train/test manifest pair per left-out session.
    """
    kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["manifest_folder"],
        "emotions": hparams["classes"],
        "merge_excited": hparams["merge_excited"],
        "sample_rate": hparams["sample_rate"],
        "num_workers": hparams["prep_num_workers"],
    }
    return run_on_main(prepare_iemocap, kwargs=kwargs)  # the result reaches every process


def build_datasets(hparams, manifests):
    """Audio + class-index pipelines; the test set sorted by duration (less padding)."""
    classes, sample_rate = hparams["classes"], hparams["sample_rate"]
    return {
        "train": classification_dataset(manifests["train"], classes, sample_rate=sample_rate),
        "test": classification_dataset(
            manifests["test"], classes, sample_rate=sample_rate, sort="ascending"
        ),
    }


def run_fold(argv):
    """Train and test one fold (``argv`` holds ``--fold=k``); return its results dict."""
    hparams, run_opts = setup_experiment(argv)
    fold = int(hparams["fold"])
    results_path = Path(hparams["fold_folder"]) / RESULTS
    if results_path.is_file():
        logger.info("Fold %d already done: %s", fold, results_path)
        return json.loads(results_path.read_text(encoding="utf-8"))
    datasets = build_datasets(hparams, prepare(hparams)["folds"][fold])
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
    results = {
        "fold": fold,
        "test_session": fold,
        "ua": report["ua"],
        "wa": report["wa"],
        "macro_f1": report["macro_f1"],
        "schedule": hparams["schedule"],
        "chunk_seconds": hparams["chunk_seconds"],
        "eval_chunk_seconds": hparams["eval_chunk_seconds"],
        "embedding_source": hparams["embedding_model"].checkpoint_meta.get("source", "unknown"),
        "embedding_checkpoint": str(hparams["embedding_checkpoint"]),
        "report": report,
    }
    if if_main_process():
        brain.save_predictions(Path(hparams["fold_folder"]) / "predictions.csv")
        results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    logger.info("Fold %d: UA %.2f %%, WA %.2f %%", fold, 100 * report["ua"], 100 * report["wa"])
    return results


def aggregate(output_folder) -> dict:
    """Gather ``fold*/results.json`` into ``results.json`` and the Markdown ``results.md``."""
    output_folder = Path(output_folder)
    folds = {}
    for fold in FOLDS:
        path = output_folder / f"fold{fold}" / RESULTS
        if path.is_file():
            folds[fold] = json.loads(path.read_text(encoding="utf-8"))
    if not folds:
        raise FileNotFoundError(
            f"No fold results under {output_folder}/fold*/{RESULTS}: train the folds first."
        )
    reports = [folds[k] for k in sorted(folds)]
    summary = summarise_folds(reports, ("ua", "wa", "macro_f1"))
    first = reports[0]
    table = folds_markdown_table(reports, [f"Session {k}" for k in sorted(folds)])
    title = (
        f"IEMOCAP 4-class emotion recognition, leave-one-session-out ({len(folds)}/5 folds); "
        f"schedule {first['schedule']}, chunk {first['chunk_seconds']} s, "
        f"embedding from {first['embedding_source']}"
    )
    results = {
        "folds": {str(k): v for k, v in folds.items()},
        "complete": len(folds) == len(FOLDS),
        "summary": summary,
        "ua_mean": summary["ua"]["mean"],
        "ua_std": summary["ua"]["std"],
        "wa_mean": summary["wa"]["mean"],
        "wa_std": summary["wa"]["std"],
        "schedule": first["schedule"],
        "embedding_source": first["embedding_source"],
    }
    if if_main_process():
        (output_folder / RESULTS).write_text(json.dumps(results, indent=2), encoding="utf-8")
        (output_folder / "results.md").write_text(f"{title}\n\n{table}\n", encoding="utf-8")
    return results


def _without_fold(argv):
    """``argv`` without any ``--fold`` / ``--aggregate_only`` option (value included)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--fold", "--aggregate_only"):
            skip = True
            continue
        if arg.startswith(("--fold=", "--aggregate_only=")):
            continue
        out.append(arg)
    return out


def main(argv):
    """Run the requested fold(s), then aggregate; returns the aggregated results."""
    hparams_file, _, overrides = sb.parse_arguments(argv)
    fold = str(hparam_value(hparams_file, "fold", overrides))
    aggregate_only = bool(hparam_value(hparams_file, "aggregate_only", overrides))
    if fold == "all":
        folds = FOLDS
    elif fold.isdigit() and int(fold) in FOLDS:
        folds = (int(fold),)
    else:
        raise ValueError(f"--fold must be one of 1..5 or all, got {fold!r}")
    base = _without_fold(argv)
    if not aggregate_only:
        for k in folds:
            run_fold(base + [f"--fold={k}"])
    output_folder = hparam_value(hparams_file, "output_folder", overrides)
    results = aggregate(output_folder)
    if if_main_process():
        print((Path(output_folder) / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
