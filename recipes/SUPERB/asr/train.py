#!/usr/bin/env python3
"""SUPERB ASR (character CTC, WER) on a frozen upstream.

Prepares the LibriSpeech manifests, trains a BiLSTM CTC head on the learnable weighted sum of
the frozen upstream's hidden layers (:class:`lasersb.brains.superb.SuperbCTCBrain`), selects
the checkpoint on dev-clean WER, then writes per-utterance hypotheses, alignments, per-split
JSON summaries and ``<output_folder>/results.json`` (read by ``python -m lasersb.report``).

Run from the repository root:
    python recipes/SUPERB/asr/train.py recipes/SUPERB/asr/hparams/asr.yaml \\
        --data_folder=/path/LibriSpeech --upstream_source=facebook/hubert-base-ls960
"""

import sys

from lasersb.brains.superb import run_superb_recipe


def main(argv):
    """Prepare, train, select on dev, evaluate; returns the content of results.json."""
    return run_superb_recipe(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
