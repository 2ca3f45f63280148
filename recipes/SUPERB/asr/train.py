#!/usr/bin/env python3
"""SUPERB ASR (character CTC, WER) on a frozen upstream.

Prepares the LibriSpeech manifests, trains a BiLSTM CTC head on the learnable weighted sum of
the frozen upstream's hidden layers (:class:`lasersb.brains.superb.SuperbCTCBrain`), selects
the checkpoint on dev-clean WER, then writes per-utterance hypotheses, alignments, per-split
JSON summaries and ``<output_folder>/results.json`` (read by ``python -m lasersb.report``).

Run from the repository root:
    python recipes/SUPERB/asr/train.py recipes/SUPERB/asr/hparams/asr.yaml \\
        --data_folder=/path/LibriSpeech --upstream_source=facebook/hubert-base-ls960

The steps (as in recipes/TEMPLATE): ``setup_experiment`` (arguments, hparams, output folder),
``run_on_main(prepare_manifests)``, the datasets, the optional feature cache and beam decoder,
the Brain, ``fit`` (resuming from the last checkpoint; with ``--test_only`` only the evaluation
runs), and ``evaluate_splits`` on the selected checkpoint. For another corpus change only
:func:`prepare_manifests` (the corpus-specific part) and the hparams.
"""

import sys
from pathlib import Path

from speechbrain.utils.distributed import run_on_main

from data_prep.librispeech_prepare import available_splits, prepare_librispeech, prepared_splits
from lasersb.brains.superb import SuperbCTCBrain
from lasersb.data.feature_cache import FeatureCache
from lasersb.data.manifests import merge_manifests
from lasersb.data.pipelines import add_ctc_targets, audio_dataset, dataloader_options
from lasersb.decoding import CTCBeamDecoder
from lasersb.experiment import setup_experiment


def prepare_manifests(hparams):
    """Step 2, the corpus-specific part (main process only): ``{split: LibriSpeech CSV}``.

    Training and dev splits must exist; evaluation splits missing from ``data_folder`` are
    skipped. When ``manifest_folder`` is shared with a run that prepared a superset of these
    splits (LASER's run.sh), its split list is reused, so the preparation is not redone.
    Phones are written too when a ``lexicon_file`` is given, so that ASR and PR runs given the
    same lexicon can share one manifest folder.
    """
    wanted = [*hparams["train_splits"], hparams["dev_split"]]
    evaluation = [s for s in hparams["test_splits"] if s not in wanted]
    splits = wanted + available_splits(hparams["data_folder"], evaluation)
    previous = prepared_splits(hparams["manifest_folder"])
    if previous and set(splits) <= set(previous):
        splits = previous
    return prepare_librispeech(
        hparams["data_folder"],
        hparams["manifest_folder"],
        splits=tuple(splits),
        lexicon_file=hparams["lexicon_file"],
        skip_bad_files=hparams["skip_bad_files"],
        with_phonemes=bool(hparams["lexicon_file"]),
        num_workers=hparams["prep_num_workers"],
    )


def build_datasets(hparams, manifests):
    """Step 3: the training set and ``{split: dataset}`` to evaluate, with CTC targets.

    The evaluation splits are dev, the test splits that were prepared and, with
    ``evaluate_train_set``, the training set (as ``train``).
    """
    rate = hparams["sample_rate"]
    train_csvs = [manifests[split] for split in hparams["train_splits"]]
    train_csv = train_csvs[0]
    if len(train_csvs) > 1:
        train_csv = merge_manifests(train_csvs, Path(hparams["manifest_folder"]) / "train.csv")
    sorting = hparams["train_sorting"]  # bucket (s3prl) | random | ascending | descending
    train = audio_dataset(
        train_csv,
        sample_rate=rate,
        max_duration=hparams["max_duration"],
        sort=None if sorting in ("random", "bucket") else sorting,
    )
    if hparams["train_max_utterances"]:
        train = train.filtered_sorted(select_n=int(hparams["train_max_utterances"]))
    evaluation = {}
    for split in [hparams["dev_split"], *hparams["test_splits"]]:
        if split in manifests and split not in evaluation:
            evaluation[split] = audio_dataset(manifests[split], sample_rate=rate, sort="ascending")
    if hparams["evaluate_train_set"]:
        evaluation["train"] = train
    datasets = [train, *[d for d in evaluation.values() if d is not train]]
    add_ctc_targets(datasets, hparams["tokenizer"], hparams["target_key"])
    return train, evaluation


def loader_options(hparams, train):
    """Data-loader options of training (s3prl's length buckets by default) and evaluation."""
    bucketing = hparams["train_sorting"] == "bucket"
    train_loader = dataloader_options(
        train,
        batch_size=hparams["batch_size"],
        dynamic_batching=hparams["dynamic_batching"],
        max_batch_length=hparams["max_batch_length"],
        shuffle=hparams["train_sorting"] in ("random", "bucket"),
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
        bucketing=bucketing,
        halve_above_seconds=hparams["halve_batch_above_seconds"] if bucketing else None,
        epoch_counter=hparams["epoch_counter"] if bucketing else None,
    )
    eval_loader = {"batch_size": hparams["eval_batch_size"]}
    if hparams["num_workers"]:
        eval_loader["num_workers"] = hparams["num_workers"]
    return train_loader, eval_loader


def add_cache_and_decoder(hparams):
    """The frozen upstream's feature cache (``feature_cache_folder``) and the beam decoder."""
    hparams["feature_cache"] = None
    if hparams["feature_cache_folder"]:
        hparams["feature_cache"] = FeatureCache.for_upstream(
            hparams["feature_cache_folder"],
            hparams["upstream"],
            dtype=hparams["feature_cache_dtype"],
        )
    if hparams["decoder"] not in ("greedy", "beam"):
        raise ValueError(f"decoder must be 'greedy' or 'beam', got {hparams['decoder']!r}")
    hparams["beam_decoder"] = None
    if hparams["decoder"] == "beam":
        tokenizer = hparams["tokenizer"]
        hparams["beam_decoder"] = CTCBeamDecoder(
            tokenizer.labels,
            blank_index=tokenizer.blank_index,
            beam_size=hparams["beam_size"],
            kenlm_model_path=hparams["kenlm_model_path"],
            alpha=hparams["lm_alpha"],
            beta=hparams["lm_beta"],
        )


def main(argv):
    """Prepare, train, select on dev, evaluate; returns the content of results.json.

    Returns ``None`` when ``evaluate_after_training`` is false and ``--test_only`` is not
    given (train only: run.sh's stage 1).
    """
    hparams, run_opts = setup_experiment(argv)  # step 1
    manifests = run_on_main(prepare_manifests, args=[hparams])  # step 2: reaches every process
    train, evaluation = build_datasets(hparams, manifests)  # step 3
    train_loader, eval_loader = loader_options(hparams, train)
    add_cache_and_decoder(hparams)
    brain = SuperbCTCBrain(  # step 4
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(  # step 5: resumes from the last checkpoint; with --test_only, does nothing
        hparams["epoch_counter"],
        train,
        evaluation[hparams["dev_split"]],
        train_loader_kwargs=train_loader,
        valid_loader_kwargs=eval_loader,
    )
    if not hparams["evaluate_after_training"] and not run_opts.test_only:
        return None
    return brain.evaluate_splits(evaluation, loader_kwargs=eval_loader)


if __name__ == "__main__":
    main(sys.argv[1:])
