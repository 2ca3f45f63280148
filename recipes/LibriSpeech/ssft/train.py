#!/usr/bin/env python3
"""Self-supervised fine-tuning (SSFT) of a HuBERT/WavLM upstream on LibriSpeech: LASER, SCORE, Spin.

Run from the repository root:

    python recipes/LibriSpeech/ssft/train.py hparams/laser.yaml --data_folder=/path/LibriSpeech
    python recipes/LibriSpeech/ssft/train.py hparams/score.yaml --data_folder=/path/LibriSpeech
    python recipes/LibriSpeech/ssft/train.py hparams/spin.yaml --data_folder=/path/LibriSpeech

(``*_wavlm.yaml``: the WavLM rows.) The script prepares the LibriSpeech manifests and fine-tunes
the top transformer layers with the Brain that the hparams file names (``brain_class``):

- LASER and SCORE, :class:`~lasersb.brains.laser.LaserBrain`: soft-DTW divergence between an
  utterance and its speed/pitch-perturbed copy (LASER: plus the temporal regulariser), batches of
  ``batch_size`` utterances (``train_batching: utterances``); the soft alignment of a dev pair is
  drawn before and after fine-tuning (``soft_alignment.png``).
- Spin, :class:`~lasersb.brains.spin.SpinBrain`: swapped prediction between an utterance and its
  speaker-perturbed copy, batches of ``batch_total_seconds`` of audio as the release
  (``train_batching: total_seconds``).

Each exports the fine-tuned upstream in Hugging Face format to ``<output_folder>/upstream_hf``
(SUPERB reads it unchanged) and writes ``ssft_summary.json``. A killed run resumes from its last
checkpoint when the same command is run again. ``--export_only=True`` only re-exports from the
latest checkpoint.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.librispeech_prepare import prepare_librispeech
from lasersb.data.audio import read_audio
from lasersb.data.manifests import merge_manifests
from lasersb.data.pipelines import (
    TotalLengthBatchSampler,
    audio_dataset,
    dataloader_options,
    loader_generator,
)
from lasersb.experiment import setup_experiment

logger = logging.getLogger(__name__)


def build_datasets(hparams):
    """Prepare the manifests (main process only) and build the train and dev datasets."""
    splits = list(hparams["train_splits"]) + list(hparams["valid_splits"])
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "splits": splits,
            "lexicon_file": None,
            "with_phonemes": False,
            "skip_bad_files": hparams["skip_bad_files"],
            "num_workers": hparams["prep_num_workers"],
        },
    )
    manifests = Path(hparams["manifest_folder"])
    datasets = {}
    for name in ("train", "valid"):
        csvs = [manifests / f"{split}.csv" for split in hparams[f"{name}_splits"]]
        merged = csvs[0] if len(csvs) == 1 else merge_manifests(csvs, manifests / f"{name}.csv")
        datasets[name] = audio_dataset(
            merged,
            sample_rate=hparams["sample_rate"],
            max_duration=hparams["max_duration"],
            min_duration=hparams["min_duration"],
            sort=None,
        )
    train_data, valid_data = datasets["train"], datasets["valid"]
    limit = hparams["valid_max_utterances"]
    if limit is not None and len(valid_data) > limit:
        # A fixed, evenly spread subset keeps dev losses comparable between runs.
        step = len(valid_data) / limit
        keep = {valid_data.data_ids[int(i * step)] for i in range(limit)}
        valid_data = valid_data.filtered_sorted(key_test={"id": lambda uid: uid in keep})
    return train_data, valid_data


def train_loader_options(hparams, train_data):
    """The training batches that ``train_batching`` selects (``Brain.fit``'s loader kwargs)."""
    if hparams["train_batching"] == "utterances":
        # LASER/SCORE: batch_size utterances, or dynamic batches of max_batch_length seconds.
        return dataloader_options(
            train_data,
            batch_size=hparams["batch_size"],
            dynamic_batching=hparams["dynamic_batching"],
            max_batch_length=hparams["max_batch_length"],
            shuffle=True,
            num_workers=hparams["num_workers"],
            seed=hparams["seed"],
        )
    if hparams["train_batching"] == "total_seconds":
        # Spin: consecutive length-sorted utterances up to a total duration (the release's).
        sampler = TotalLengthBatchSampler(
            train_data,
            max_total_seconds=hparams["batch_total_seconds"],
            crop_seconds=hparams["random_crop_samples"] / hparams["sample_rate"],
            shuffle=True,
            drop_last=True,
            seed=hparams["seed"],
            epoch_counter=hparams["epoch_counter"],
        )
        return {
            "batch_sampler": sampler,
            "num_workers": hparams["num_workers"],
            "generator": loader_generator(hparams["seed"]),
        }
    raise ValueError(
        f"train_batching: {hparams['train_batching']!r} in the hparams file; set it to "
        "'utterances' (batch_size per batch) or 'total_seconds' (batch_total_seconds per batch)."
    )


def main(argv):
    """Fine-tune, export and (LASER/SCORE) plot; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    train_data, valid_data = build_datasets(hparams)

    brain = hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    plots_alignment = hasattr(brain, "plot_alignments")  # LaserBrain does, SpinBrain does not
    if plots_alignment:
        # The dev utterance whose soft alignment is drawn before and after fine-tuning.
        first = valid_data.data[valid_data.data_ids[0]]
        brain.alignment_example = read_audio(first["wav"], sample_rate=hparams["sample_rate"])

    start = time.time()
    if not hparams["export_only"]:
        brain.fit(
            hparams["epoch_counter"],
            train_data,
            valid_data,
            train_loader_kwargs=train_loader_options(hparams, train_data),
            valid_loader_kwargs=dataloader_options(
                valid_data,
                batch_size=hparams["valid_batch_size"],
                num_workers=hparams["num_workers"],
            ),
        )
    else:
        brain.on_evaluate_start()

    export = brain.export_upstream(hparams["export_folder"])
    figure = None
    if plots_alignment:
        figure = brain.plot_alignments(brain.alignment_example, seed=hparams["alignment_plot_seed"])
    if if_main_process():
        summary = {
            "method": f"{hparams['method_name']} SSFT",
            "upstream_source": str(hparams["upstream_source"]),
            "optimizer_steps": int(brain.optimizer_step),
            "final_lr": brain.final_lr,
            "train": getattr(brain, "train_stats", None),
            "valid": getattr(brain, "valid_stats", None),
            "export_folder": str(export),
            "alignment_plot": str(figure) if figure else None,
            "wall_time_s": round(time.time() - start, 1),
            # The report turns these into GPU-hours (CUDA) or wall-clock hours (CPU).
            "device": str(brain.device),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        }
        out = Path(hparams["output_folder"]) / "ssft_summary.json"
        out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        logger.info("SSFT summary written to %s", out)


if __name__ == "__main__":
    main(sys.argv[1:])
