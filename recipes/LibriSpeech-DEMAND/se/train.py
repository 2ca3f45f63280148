#!/usr/bin/env python3
"""Position-invariant SE fine-tuning through a frozen SSL model on noisy LibriSpeech (DEMAND).

Run from the repository root, one hparams file per loss:

    python recipes/LibriSpeech-DEMAND/se/train.py \\
        recipes/LibriSpeech-DEMAND/se/hparams/softdtw.yaml \\
        --data_folder=/data/LibriSpeech --noise_folder=/data/DEMAND \\
        --enhancer_pretrained=/data/master64-8a5dfb4bb92753dd.th

The script prepares noisy LibriSpeech (data_prep/noisy_prepare.py: 'seen' DEMAND types for
train/dev/test, 'unseen' types for a second test set), fine-tunes the SE model with the loss of
the hparams file (``mse``, ``mse_zeropad`` or ``softdtw``; lasersb.brains.se_finetune), logs the
training loss of every step (``loss_curve.csv``) and the dev metrics (``valid_curve.csv``),
then, with the best checkpoint (lowest dev SSL MSE), evaluates the clean / seen-noise /
unseen-noise test sets (SSL MSE to clean, SI-SNR, PESQ/STOI when installed), writes the enhanced
test sets in the LibriSpeech layout under ``<enhanced_folder>/<condition>`` (inputs of the
SUPERB recipes, see run.sh) and ``results.json`` / ``results.md``. A killed run resumes from its
last checkpoint when the same command is run again.
"""

import json
import logging
import sys
import time
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, run_on_main

from data_prep.noisy_prepare import noisy_dataset, prepare_noisy_librispeech
from lasersb.brains.se_finetune import SEFinetuneBrain
from lasersb.data.pipelines import loader_generator
from lasersb.experiment import setup_experiment

logger = logging.getLogger(__name__)

CONDITIONS = ("clean", "seen", "unseen")


def build_datasets(hparams):
    """Prepare noisy LibriSpeech (main process only); return train, dev and test datasets."""
    train, valid, test = hparams["train_split"], hparams["valid_split"], hparams["test_split"]
    manifests = run_on_main(
        prepare_noisy_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "noise_folder": hparams["noise_folder"],
            "save_folder": hparams["noisy_folder"],
            "splits": list(dict.fromkeys([train, valid, test])),
            "unseen_splits": [test],
            "snrs": hparams["snrs"],
            "write_mixtures": hparams["write_mixtures"],
            "seed": hparams["noise_seed"],
            "sample_rate": hparams["sample_rate"],
            "num_workers": hparams["prep_num_workers"],
        },
    )
    seen, unseen = manifests["seen"], manifests["unseen"]
    rate = hparams["sample_rate"]
    train_data = noisy_dataset(seen[train], rate, max_duration=hparams["max_duration"])
    valid_data = noisy_dataset(seen[valid], rate, sort="ascending")
    limit = hparams["valid_max_utterances"]
    if limit is not None and len(valid_data) > limit:
        # A fixed, evenly spread subset keeps dev metrics comparable between runs and losses.
        step = len(valid_data) / limit
        keep = {valid_data.data_ids[int(i * step)] for i in range(limit)}
        valid_data = valid_data.filtered_sorted(key_test={"id": lambda uid: uid in keep})
    tests = {"clean": noisy_dataset(seen[test], rate, sort="ascending", clean_input=True),
             "seen": noisy_dataset(seen[test], rate, sort="ascending")}  # fmt: skip
    if test in unseen:
        tests["unseen"] = noisy_dataset(unseen[test], rate, sort="ascending")
    return train_data, valid_data, tests


def results_markdown(results: dict, loss: str) -> str:
    """A Markdown table of the test metrics per condition."""
    columns = ["ssl_mse_noisy", "ssl_mse", "si_snr_noisy", "si_snr", "si_snr_i", "pesq", "stoi"]
    present = [c for c in columns if any(c in r for r in results.values())]
    lines = [
        f"SE fine-tuning, loss `{loss}` (SSL MSE: frame-wise, to the clean speech's SSL features;"
        " `_noisy`: the SE input)",
        "",
        "| test set | " + " | ".join(present) + " |",
        "|---" * (len(present) + 1) + "|",
    ]
    for name, stats in results.items():
        cells = [f"{stats[c]:.4g}" if c in stats else "-" for c in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    """Prepare, fine-tune, evaluate, export; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)
    train_data, valid_data, tests = build_datasets(hparams)
    brain = SEFinetuneBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    start = time.time()
    brain.fit(
        hparams["epoch_counter"],
        train_data,
        valid_data,
        train_loader_kwargs={
            "batch_size": hparams["batch_size"],
            "shuffle": True,
            "num_workers": hparams["num_workers"],
            # iter(loader) leaves the global RNG (checkpointed by RandomState) alone.
            "generator": loader_generator(hparams["seed"]),
        },  # fmt: skip
        valid_loader_kwargs={
            "batch_size": hparams["eval_batch_size"],
            "num_workers": hparams["num_workers"],
        },  # fmt: skip
    )
    train_time = time.time() - start
    loader = {"batch_size": hparams["eval_batch_size"], "num_workers": hparams["num_workers"]}
    results = {}
    for name in CONDITIONS:
        if name not in tests:
            continue
        brain.test_name = name
        brain.evaluate(tests[name], min_key="ssl_mse", test_loader_kwargs=dict(loader))
        results[name] = brain.test_stats
        brain.enhance_to_folder(
            tests[name], Path(hparams["enhanced_folder"]) / name, hparams["test_split"],
            dict(loader),
        )  # fmt: skip
    if if_main_process():
        out = Path(hparams["output_folder"])
        summary = {
            "loss": hparams["loss"],
            "optimizer_steps": int(brain.optimizer_step),
            "train_time_s": round(train_time, 1),
            "valid": getattr(brain, "valid_stats", None),
            "test": results,
            "enhanced_folder": str(hparams["enhanced_folder"]),
        }
        (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (out / "results.md").write_text(results_markdown(results, hparams["loss"]))
        logger.info("Results written to %s", out / "results.md")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
