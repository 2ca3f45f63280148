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

The steps (as in recipes/TEMPLATE): ``setup_experiment``, ``run_on_main(prepare_manifests)``
(the corpus-specific part), the tokenizer, the datasets, the Brain, ``fit``, and
``evaluate_splits`` on the checkpoint selected on dev.
"""

import sys
from pathlib import Path

from speechbrain.utils.distributed import run_on_main

from data_prep.commonvoice_prepare import prepare_commonvoice
from data_prep.librilight_prepare import prepare_librilight
from data_prep.librispeech_prepare import available_splits, prepare_librispeech
from lasersb.brains.adapter_ctc import AdapterCTCBrain
from lasersb.data.manifests import merge_manifests
from lasersb.data.pipelines import add_ctc_targets, audio_dataset, dataloader_options
from lasersb.experiment import setup_experiment


def prepare_manifests(hparams):
    """Step 2, the corpus-specific part (main process only): ``{split name: manifest path}``.

    ``train_corpus`` picks the training data: ``librilight`` (``librilight_folder``,
    ``librilight_subset``; the paper's English setting), ``librispeech`` (LibriSpeech splits
    named in ``train_splits``, e.g. ``train-clean-100``) or ``commonvoice``
    (``commonvoice_folder``, ``commonvoice_language``, ``commonvoice_hours``; the paper's
    second language). Dev/test splits named like ``cv-<lang>-<split>`` come from Common Voice,
    the others from LibriSpeech (``data_folder``); LibriSpeech evaluation splits missing on
    disk are skipped.
    """
    corpus, folder = hparams["train_corpus"], hparams["manifest_folder"]
    manifests = {}
    if corpus == "librilight":
        if not hparams["librilight_folder"]:
            raise ValueError(
                "train_corpus: librilight needs --librilight_folder=<librispeech_finetuning>; "
                "or use --train_corpus=librispeech --train_splits=[train-clean-100]."
            )
        manifests.update(
            prepare_librilight(
                hparams["librilight_folder"],
                folder,
                subset=hparams["librilight_subset"],
                num_workers=hparams["prep_num_workers"],
            )
        )
    elif corpus == "commonvoice":
        if not hparams["commonvoice_folder"]:
            raise ValueError("train_corpus: commonvoice needs --commonvoice_folder=<cv/lang>.")
        manifests.update(
            prepare_commonvoice(
                hparams["commonvoice_folder"],
                folder,
                language=hparams["commonvoice_language"],
                max_train_hours=hparams["commonvoice_hours"],
                seed=hparams["seed"],
                num_workers=hparams["prep_num_workers"],
            )
        )
    elif corpus != "librispeech":
        raise ValueError(
            f"train_corpus must be librilight, librispeech or commonvoice, got {corpus!r}."
        )
    wanted = [*hparams["train_splits"], hparams["dev_split"], *hparams["test_splits"]]
    librispeech = [s for s in dict.fromkeys(wanted) if s not in manifests]
    required = [s for s in librispeech if s in (*hparams["train_splits"], hparams["dev_split"])]
    optional = [s for s in librispeech if s not in required]
    splits = required + available_splits(hparams["data_folder"], optional)
    if splits:
        manifests.update(
            prepare_librispeech(
                hparams["data_folder"],
                folder,
                splits=tuple(splits),
                lexicon_file=hparams["lexicon_file"],
                skip_bad_files=hparams["skip_bad_files"],
                num_workers=hparams["prep_num_workers"],
            )
        )
    return manifests


def training_manifest(hparams, manifests):
    """The training CSV: the one training split, or the merge of several."""
    csvs = [manifests[split] for split in hparams["train_splits"]]
    if len(csvs) == 1:
        return csvs[0]
    return merge_manifests(csvs, Path(hparams["manifest_folder"]) / "train.csv")


def build_datasets(hparams, manifests, train_csv):
    """Step 3: the training set and ``{split: dataset}`` to evaluate (dev first), CTC targets."""
    rate = hparams["sample_rate"]
    sorting = hparams["train_sorting"]  # random | ascending | descending
    train = audio_dataset(
        train_csv,
        sample_rate=rate,
        max_duration=hparams["max_duration"],
        sort=None if sorting == "random" else sorting,
    )
    evaluation = {}
    for split in [hparams["dev_split"], *hparams["test_splits"]]:
        if split in manifests and split not in evaluation:
            evaluation[split] = audio_dataset(manifests[split], sample_rate=rate, sort="ascending")
    add_ctc_targets([train, *evaluation.values()], hparams["tokenizer"], hparams["target_key"])
    train_loader = dataloader_options(
        train,
        batch_size=hparams["batch_size"],
        dynamic_batching=hparams["dynamic_batching"],
        max_batch_length=hparams["max_batch_length"],
        shuffle=sorting == "random",
        num_workers=hparams["num_workers"],
        seed=hparams["seed"],
    )
    eval_loader = {"batch_size": hparams["eval_batch_size"]}
    if hparams["num_workers"]:
        eval_loader["num_workers"] = hparams["num_workers"]
    return train, evaluation, train_loader, eval_loader


def run(argv):
    """Prepare, train, select on dev, evaluate; returns ``(brain, content of results.json)``."""
    hparams, run_opts = setup_experiment(argv)  # step 1
    manifests = run_on_main(prepare_manifests, args=[hparams])  # step 2: reaches every process
    train_csv = run_on_main(training_manifest, args=[hparams, manifests])
    tokenizer = hparams["tokenizer"]
    if hasattr(tokenizer, "fit"):  # SentencePiece: trained on the main process, then loaded
        run_on_main(tokenizer.fit, args=[train_csv], post_func=tokenizer.fit, post_args=[train_csv])
    train, evaluation, train_loader, eval_loader = build_datasets(hparams, manifests, train_csv)
    brain = AdapterCTCBrain(  # step 4
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    before = None
    if hparams["evaluate_before_training"]:
        before = brain.evaluate_splits(evaluation, eval_loader, write_results=False)
    brain.fit(  # step 5: resumes from the last checkpoint
        hparams["epoch_counter"],
        train,
        evaluation[hparams["dev_split"]],
        train_loader_kwargs=train_loader,
        valid_loader_kwargs=eval_loader,
    )
    trained = {"trained_steps": int(brain.optimizer_step)}
    results = brain.evaluate_splits(evaluation, eval_loader, before=before, extra=trained)
    return brain, results


def main(argv):
    """Command-line entry point; returns the content of results.json."""
    return run(argv)[1]


if __name__ == "__main__":
    main(sys.argv[1:])
